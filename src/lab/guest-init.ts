/**
 * The lab guest's /init: loads the virtio modules (modular in Debian's cloud kernel), then writes fresh random
 * data to every virtio disk in a loop, one 64 KiB block per disk per round, and reports each write on the serial
 * port once it is flushed (`round N disk vda offset X`). A write reported there has reached QEMU's block layer,
 * so it is in every enabled dirty bitmap of that disk: the host can check bitmaps against what the guest did.
 */

/** The modules to load, in dependency order (each one's `depends=` names only modules before it). */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_pci_modern_dev",
  "virtio_pci_legacy_dev",
  "virtio_pci",
  "virtio_blk",
] as const;

/** Size of each guest write, and the granularity the host's bitmaps should use to count them one to one. */
export const GUEST_BLOCK = 65536;

/** The line the guest prints once its disks are visible and the write loop starts. */
export const GUEST_READY = "bitferry-guest: ready";

/** Kernel parameter telling the init how many disks to wait for (they are probed asynchronously, in any order). */
export const GUEST_DISKS_PARAM = "bitferry.disks";

/**
 * The init never exits, whatever fails (the kernel would panic and QEMU, run with -no-reboot, would quit): errors
 * are printed on the serial port, and the machine idles.
 */
export const GUEST_INIT = `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
idle() { echo "bitferry-guest: error: $*"; while :; do sleep 60; done; }
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in ${GUEST_MODULES.join(" ")}; do
  insmod /lib/modules/$m.ko || echo "bitferry-guest: insmod $m failed"
done
want=$(sed -n 's/.*${GUEST_DISKS_PARAM.replace(".", "\\.")}=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
[ -n "$want" ] || want=1
# virtio-blk probes its devices asynchronously after insmod returns; /dev nodes follow /sys/block.
tries=0
while :; do
  disks=""
  count=0
  for f in /sys/block/vd*; do
    [ -e "$f" ] || continue
    d=\${f##*/}
    size=$(blockdev --getsize64 /dev/$d 2>/dev/null)
    [ -n "$size" ] && [ "$size" -ge ${GUEST_BLOCK} ] || continue
    eval "slots_$d=$((size / ${GUEST_BLOCK}))"
    disks="$disks$d "
    count=$((count + 1))
  done
  [ $count -ge $want ] && break
  tries=$((tries + 1))
  [ $tries -lt 1200 ] || idle "found $count of $want disks: $disks"
  usleep 50000
done
echo "${GUEST_READY} disks $disks"
round=0
while :; do
  round=$((round + 1))
  for d in $disks; do
    eval "slots=\\$slots_$d"
    slot=$(( (RANDOM * 32768 + RANDOM) % slots ))
    dd if=/dev/urandom of=/dev/$d bs=${GUEST_BLOCK} seek=$slot count=1 conv=notrunc,fsync 2>/dev/null &&
      echo "round $round disk $d offset $((slot * ${GUEST_BLOCK}))"
  done
done
`;
