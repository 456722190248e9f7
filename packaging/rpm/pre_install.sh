# stoa-tap %pre: the service account exists before the files are laid down,
# so the configuration can be shipped as root:stoa-tap 0640. The unit runs
# with DynamicUser=yes; systemd uses this static account of the same name
# instead of allocating one.
getent group stoa-tap >/dev/null || groupadd -r stoa-tap
getent passwd stoa-tap >/dev/null ||
    useradd -r -g stoa-tap -d /var/lib/stoa-tap -M -s /sbin/nologin \
        -c "stoa-tap passive API traffic analyzer" stoa-tap
exit 0
