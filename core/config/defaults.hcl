# Petrel daemon defaults. Every setting here can be overridden in the file
# given with `petreld --config FILE`, and the directories also by flags.

# Persistent state: VM records, the image store, block devices and each
# plugin's state directory (plugins/NAME: a metrics sink's buffer of
# batches waiting for its destination). The directory is a
# petreld instance: it gets an instance id at the first start, which marks
# the taps and the run directory the instance makes, so that petrelds with
# other data directories on the same host leave them alone.
data_dir = "/var/lib/petrel"

# Runtime files: the daemon socket and one directory per running VM. It
# belongs to one instance (one data directory): another petreld refuses it
# while it holds that instance's VMs. Give each petreld on a host its own.
run_dir = "/run/petrel"

# Where plugin binaries live. Empty: beside the petreld binary, then
# /usr/libexec/petrel.
plugin_dir = ""

# Backend used when `petrel create` names none.
default_backend = "hvt"

# Permission bits of <run_dir>/petreld.sock, the administrators' socket:
# whoever can open it can manage every VM on the host. petreld.sock.files
# beside it, on which local clients hand petreld the files they upload or
# download, gets the same bits.
socket_mode = "0600"

# Permission bits and group of <run_dir>/petreld-remote.sock, the socket
# petrel-endpoint forwards remote requests to. petreld serves a request
# there only with a client certificate chain it verifies itself, so the
# endpoint can do exactly what its callers' certificates allow and
# nothing more. Make the endpoint's user its only client: the packaged
# configuration sets "0660" and the group petrel-endpoint (the endpoint's
# own, which no one else is in). remote_socket_group is a group name or
# gid; empty leaves petreld's own group. petreld-remote.sock.files beside
# it, on which the endpoint hands petreld the pipes its callers' content
# goes through, gets the same mode and group.
remote_socket_mode = "0600"
remote_socket_group = ""

# The largest total size, in MB, of the image store (<data_dir>/images):
# every upload that would take it past this is refused, whoever makes it.
# It is the root policy's image allowance, so a delegated policy's
# images_mb never exceeds it. Each tenant's uploads and the images of its
# VMs also count against its own policy (images_mb, or its memory
# allowance when it states none), uploads are admitted only for callers
# whose policies allow a VM, and an image no VM uses is removed as soon as
# the create that brought it fails (or 10 minutes after its upload).
image_store_mb = 4096

# Console ring per VM, kept by its shim and by petreld.
console_lines = 1000
console_bytes = 1048576

# How long a VM gets between SIGTERM and SIGKILL on destroy and restart.
stop_timeout = "5s"

# Restart-on-failure back-off: doubles from min to max; reset after a VM
# has run for reset_after.
restart_backoff_min = "1s"
restart_backoff_max = "60s"
restart_reset_after = "60s"

# How often plugins are health-checked.
plugin_health_interval = "5s"

# How often VM, host and daemon statistics are collected (and written to
# every metrics sink, one batch per interval).
stats_interval = "10s"

# Remote management through petrel-endpoint: the root CA certificate
# (ca.pem from `petrel ca init`) that remote callers' chains must lead to,
# and the revocation list kept with `petrel ca revoke` (re-read when it
# changes). Empty: requests forwarded by the endpoint are refused.
#   ca_file = "/etc/petrel/ca/ca.pem"
#   revocation_file = "/etc/petrel/ca/revoked.json"
ca_file = ""
revocation_file = ""

# OCI registries, for `petrel create NAME REF` and `petrel update`: petreld
# pulls. Registries are reached over HTTPS, except loopback ones
# (localhost, 127.0.0.0/8, ::1) and the hosts listed in
# insecure_registries, reached over plain HTTP. Credentials come from
# registry_config, a docker configuration file; empty for
# $DOCKER_CONFIG/config.json or petreld's user's ~/.docker/config.json
# (root's: /root/.docker/config.json). Every caller's pulls use them.
# allowed_registries, when not empty, are the only registries (host or
# host:port, as references name them) petreld pulls from, whoever asks: a
# reference to any other is refused before anything is fetched.
#   insecure_registries = ["registry.lan:5000"]
#   registry_config = "/etc/petrel/registry.json"
#   allowed_registries = ["registry.example.org", "registry.lan:5000"]
insecure_registries = []
registry_config = ""
allowed_registries = []

# Solo5 hvt (KVM). tender: the solo5-hvt path or name on PATH; engine:
# "auto" (solo5-hvt when found, else the built-in tender), "builtin" or
# "solo5-hvt". Where KVM is unusable, creates are refused at once; set
# needs_kvm = "false" for a tender that does not use /dev/kvm. After its
# first create the plugin keeps a spare shim started, which the next
# create takes instead of starting one (about a millisecond sooner);
# spare_shim = "false" saves that idle shim's memory.
backend "hvt" {
  enabled = true
  settings = {
    tender = "solo5-hvt"
    engine = "auto"
  }
}

# QEMU: Solo5 virtio unikernels and Linux guests (create with --initrd
# and --cmdline). linux_accel and unikernel_accel: "auto" (KVM where it
# can run the guest, else TCG with a warning on the console), "kvm" or
# "tcg". Set enabled = false on hosts without qemu-system-x86_64.
backend "qemu" {
  enabled = true
  settings = {
    qemu        = "qemu-system-x86_64"
    linux_accel = "auto"
  }
}

# Solo5 spt (a seccomp-sandboxed process; no KVM needed). tender: the
# solo5-spt path or name on PATH; engine: "auto" (solo5-spt when found,
# else Petrel's built-in spt tender), "builtin" or "solo5-spt".
# spare_shim: as for hvt.
backend "spt" {
  enabled = true
  settings = {
    tender = "solo5-spt"
    engine = "auto"
  }
}

# Taps for VM network devices, on existing bridges (vishvananda/netlink on
# Linux, ifconfig on FreeBSD).
network "bridge" {
  enabled = true
}

# Metrics sinks, each a plugin (petrel-plugin-NAME) receiving one batch per
# stats_interval. None is enabled by default; for example:
#
#   metrics "influx" {
#     settings = { protocol = "http", url = "http://127.0.0.1:8086", db = "petrel" }
#   }
#   metrics "prometheus" {
#     settings = { address = "127.0.0.1:9464" }
#   }
#
# The influx sink creates its database (`db`) if InfluxDB lacks it. While
# a sink's destination is down, the sink keeps the batches it cannot write
# in a buffer on disk, `<data_dir>/plugins/NAME/buffer`, which survives
# restarts of the plugin, of petreld and of the host, and writes them in
# order once the destination is back. Two settings bound it (influx and the
# example jsonl sink; Prometheus is scraped and needs none): `buffer_mb`,
# its disk use in MiB (default "64": a day of batches from a few dozen VMs
# at the default interval, each batch counted in whole 4 KiB blocks; "0"
# turns the buffer off), and `buffer_max_age`, how long a batch may wait
# (default "24h"). Beyond them the oldest batches are dropped; every sink
# reports what it dropped and what waits as the measurement `petrel_sink`
# (`petrel_sink_*` in Prometheus), and `petrel plugins` shows the sink
# degraded while writes fail, with the last error. For example:
#
#   metrics "influx" {
#     settings = { db = "petrel", buffer_mb = "256", buffer_max_age = "72h" }
#   }
