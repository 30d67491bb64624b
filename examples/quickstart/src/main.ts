import { runQuickstart } from "./quickstart.js";

const report = await runQuickstart((line) => console.log(line));
const ok = report.reply === "hello through HBONE" && report.refusedStatus === 401;
console.log(ok ? "quickstart: OK" : "quickstart: FAILED");
process.exitCode = ok ? 0 : 1;
