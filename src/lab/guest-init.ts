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

export const GUEST_INIT = `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in ${GUEST_MODULES.join(" ")}; do
  insmod /lib/modules/$m.ko || echo "bitferry-guest: insmod $m failed"
done
# virtio-blk probes its devices asynchronously after insmod returns.
n=0
while ! ls /sys/block | grep -q '^vd' && [ $n -lt 200 ]; do usleep 50000; n=$((n + 1)); done
disks=$(ls /sys/block | grep '^vd' | tr '\\n' ' ')
for d in $disks; do eval "slots_$d=$(( $(blockdev --getsize64 /dev/$d) / ${GUEST_BLOCK} ))"; done
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
