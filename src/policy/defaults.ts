import type { Policy } from "./types.js";

/** No policy file: every default of DESIGN section 3 (drive and node addresses, no allow/deny, no map). */
export const DEFAULT_POLICY: Policy = { defaults: true, allow: undefined, deny: [], map: [] };
