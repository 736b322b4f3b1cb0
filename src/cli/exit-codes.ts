/** Exit statuses of the public contract (DESIGN section 5). */
export const ExitCode = {
  OK: 0,
  /** The plan has errors, the migration or verification failed, or the image is corrupt. */
  FAILED: 1,
  /** Bad usage, a missing file, or a bad policy file. */
  USAGE: 2,
  /** Cannot connect to QEMU at the start. */
  CONNECT: 3,
  SIGINT: 130,
  SIGTERM: 143,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
