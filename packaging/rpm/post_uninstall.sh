# stoa-tap %postun ($1: 0 on erase, 1 on upgrade). rpm has no purge: an edited
# configuration is kept as /etc/stoa-tap/stoa-tap.yaml.rpmsave and the saved
# observations stay in /var/lib/stoa-tap (or /var/lib/private/stoa-tap) until
# removed by hand; the stoa-tap account is kept.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
