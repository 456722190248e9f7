# stoa-tap %post ($1: 1 on install, 2 or more on upgrade). Never enables or
# starts the service: capture begins only after the administrator has chosen
# the sources in /etc/stoa-tap/stoa-tap.yaml and run
# `systemctl enable --now stoa-tap`. An upgrade restarts it only if it ran.
# The state directory is created here rather than shipped: systemd moves it
# under /var/lib/private (leaving a symlink) when the DynamicUser= unit first
# starts, which rpm -V would then report as a changed file type.
if [ ! -e /var/lib/stoa-tap ] && [ ! -e /var/lib/private/stoa-tap ]; then
    install -d -m 0700 -o stoa-tap -g stoa-tap /var/lib/stoa-tap
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 2 ]; then
        systemctl try-restart stoa-tap.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 1 ]; then
    echo "stoa-tap installed but not started: edit /etc/stoa-tap/stoa-tap.yaml," \
        "check it with 'stoa-tap run --check --config /etc/stoa-tap/stoa-tap.yaml'," \
        "then 'systemctl enable --now stoa-tap'."
fi
exit 0
