#!/bin/bash
# dracut module: run ephemeral-root in a systemd initrd (dracut's systemd mode).
#
# Installs into the initrd:
#   /usr/bin/ephemeral-root                         the static binary
#   /usr/lib/systemd/system/ephemeral-root.service  the generic unit (initrd/ephemeral-root.service),
#                                                    wanted by initrd.target (fail-open)
#   /etc/ephemeral-root.conf                        the host's config file, when it exists
#   ephemeral-root.service.d/fail-closed.conf       only when fail-closed is asked for (see below)
#
# Knobs (environment variable, or the shell variable in a dracut config file such as
# /etc/dracut.conf.d/ephemeral-root.conf; the environment wins):
#   EPHEMERAL_ROOT_BIN  / ephemeral_root_bin   the binary to install
#                                               (default /usr/lib/ephemeral-root/ephemeral-root,
#                                               then `command -v ephemeral-root`)
#   EPHEMERAL_ROOT_CONF / ephemeral_root_conf  the config file to install as /etc/ephemeral-root.conf
#                                               (default /etc/ephemeral-root.conf; skipped if missing)
#   EPHEMERAL_ROOT_FAIL_CLOSED / ephemeral_root_fail_closed
#                                               "yes"/"1": add the fail-closed drop-in (a failed rollback
#                                               stops in the emergency shell instead of booting the old root)
#
# Install this directory as /usr/lib/dracut/modules.d/90ephemeral-root with `cp -rL` (the unit and the
# drop-in are symlinks into initrd/ in the source tree), then: dracut --add ephemeral-root ...

_er_bin() {
    local b="${EPHEMERAL_ROOT_BIN:-${ephemeral_root_bin:-}}"
    if [[ -z $b ]]; then
        if [[ -x /usr/lib/ephemeral-root/ephemeral-root ]]; then
            b=/usr/lib/ephemeral-root/ephemeral-root
        else
            b=$(command -v ephemeral-root 2> /dev/null)
        fi
    fi
    printf '%s' "$b"
}

_er_file() { # name: the copy next to this script, else the one installed with the package
    if [[ -f "$moddir/$1" ]]; then
        printf '%s' "$moddir/$1"
    elif [[ -f "/usr/lib/ephemeral-root/$1" ]]; then
        printf '%s' "/usr/lib/ephemeral-root/$1"
    fi
}

# called by dracut
check() {
    local b
    b=$(_er_bin)
    if [[ -z $b || ! -x $b ]]; then
        derror "ephemeral-root: binary not found (set EPHEMERAL_ROOT_BIN or install /usr/lib/ephemeral-root/ephemeral-root)"
        return 1
    fi
    # Not included unless asked for (--add ephemeral-root or add_dracutmodules+=" ephemeral-root ").
    return 255
}

# called by dracut
depends() {
    echo systemd
    return 0
}

# called by dracut
installkernel() {
    # The filesystems the binary can act on; missing ones (e.g. zfs without the DKMS module) are skipped.
    hostonly='' instmods -o btrfs bcachefs
    return 0
}

# called by dracut
install() {
    local b unit conf fc
    b=$(_er_bin)
    unit=$(_er_file ephemeral-root.service)
    if [[ -z $unit ]]; then
        dfatal "ephemeral-root: ephemeral-root.service not found next to module-setup.sh (install the module with cp -rL)"
        return 1
    fi
    inst_simple "$b" /usr/bin/ephemeral-root || return 1
    inst_simple "$unit" "$systemdsystemunitdir/ephemeral-root.service" || return 1
    mkdir -p "${initdir}${systemdsystemunitdir}/initrd.target.wants"
    ln_r "$systemdsystemunitdir/ephemeral-root.service" \
        "$systemdsystemunitdir/initrd.target.wants/ephemeral-root.service"

    conf="${EPHEMERAL_ROOT_CONF:-${ephemeral_root_conf:-/etc/ephemeral-root.conf}}"
    if [[ -f $conf ]]; then
        inst_simple "$conf" /etc/ephemeral-root.conf
    else
        dwarning "ephemeral-root: no config file $conf; the binary's defaults apply"
    fi

    fc="${EPHEMERAL_ROOT_FAIL_CLOSED:-${ephemeral_root_fail_closed:-no}}"
    case "$fc" in
        yes | 1 | true)
            inst_simple "$(_er_file fail-closed.conf)" \
                "$systemdsystemunitdir/ephemeral-root.service.d/fail-closed.conf" || return 1
            ;;
    esac
    return 0
}
