import { Lab } from "../../src/lab/lab.js";

/** Runs `fn` with a fresh lab and stops every QEMU it started, also when `fn` throws. */
export async function withLab<T>(fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = Lab.create();
  try {
    return await fn(lab);
  } finally {
    await lab.cleanup();
  }
}
