/**
 * Filter drivers of QEMU 7.2 and the child each passes I/O to (reference section 2.6). A driver not listed is
 * treated as a non-filter, as QEMU's own walk would for a driver it does not mark as a filter.
 */
const FILTERED_CHILD: Readonly<Record<string, string>> = {
  mirror_top: "backing",
  commit_top: "backing",
  throttle: "file",
  "copy-on-read": "file",
  "copy-before-write": "file",
  preallocate: "file",
  compress: "file",
  blkreplay: "image",
  blkverify: "file",
};

export function isFilterDriver(driver: string): boolean {
  return Object.hasOwn(FILTERED_CHILD, driver);
}

export function filteredChildRole(driver: string): string | undefined {
  return Object.hasOwn(FILTERED_CHILD, driver) ? FILTERED_CHILD[driver] : undefined;
}
