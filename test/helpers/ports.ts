import { freePort } from "../fuzz/relay.js";

/**
 * A migration URI and an NBD address over TCP on two ports free right now, picked for each run: ports derived from
 * the pid collide between test processes started one after the other (one's NBD port is the next one's stream).
 */
export async function tcpEndpoints(): Promise<{ uri: string; nbd: string }> {
  const mig = await freePort();
  let nbd = await freePort();
  while (nbd === mig) nbd = await freePort();
  return { uri: `tcp:127.0.0.1:${mig}`, nbd: `tcp:127.0.0.1:${nbd}` };
}
