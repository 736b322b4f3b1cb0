import { debuglog } from "node:util";

/** `NODE_DEBUG=bitferry` shows what bitferry does, including every QMP message on the wire. */
export const debug = debuglog("bitferry");
