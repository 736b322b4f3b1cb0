// Opens an ssh:// monitor through bitferry's library and holds it until killed (the SIGKILL test's bitferry).
import { connectSshMonitor } from "../../src/transport/monitor.js";

const client = await connectSshMonitor(process.argv[2] ?? "", { label: "held" });
process.stdout.write(`READY ${String(process.pid)}\n`);
setInterval(() => {
  void client.execute("query-status").catch(() => undefined);
}, 200);
