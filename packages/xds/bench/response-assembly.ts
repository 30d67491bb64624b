// Building 100 first-push Delta responses of 11,000 resources (250 bytes each) and the copy grpc-js
// makes to frame each one: every resource copied into each response (as before), against one shared
// encoding of the resources (SharedResourceSections). CPU time per round, both in the same run,
// alternating; compare the medians.
//
//   node --import tsx bench/response-assembly.ts [rounds]
import protobuf from "protobufjs/light.js";
import { SharedResourceSections } from "../src/shared-sections.js";

const entries = Array.from({ length: 11_000 }, (_, i) => {
  const bytes = new Uint8Array(250).fill(i & 255);
  return { name: `r${i}`, version: "v1", deltaBytes: () => bytes };
});
/** What grpc-js does with a serialized message: a new buffer with the 5-byte frame header. */
const frame = (bytes: Uint8Array) => {
  const out = Buffer.allocUnsafe(bytes.length + 5);
  out.set(bytes, 5);
  return out;
};
function copyEach(): Buffer {
  const out = protobuf.Writer.create();
  out.uint32(10).string("v1");
  for (const e of entries) out.uint32(18).bytes(e.deltaBytes());
  out.uint32(34).string("type").uint32(42).string("nonce");
  return frame(out.finish());
}
const sections = new SharedResourceSections();
function shared(): Buffer {
  const head = protobuf.Writer.create().uint32(10).string("v1").finish();
  const tail = protobuf.Writer.create().uint32(34).string("type").uint32(42).string("nonce").finish();
  return frame(Buffer.concat([head, sections.encode("t", entries).bytes, tail]));
}
const rounds = Number(process.argv[2] ?? 8);
const cpu: Record<string, number[]> = { copyEach: [], shared: [] };
for (let r = 0; r < rounds; r++) {
  for (const [name, build] of [
    ["copyEach", copyEach],
    ["shared", shared],
  ] as const) {
    const start = process.cpuUsage();
    let bytes = 0;
    for (let i = 0; i < 100; i++) bytes += build().length;
    const used = process.cpuUsage(start);
    cpu[name]?.push(Math.round((used.user + used.system) / 1000));
    if (bytes === 0) throw new Error("nothing built");
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
console.log(
  JSON.stringify({ cpuMs: cpu, medianRatio: median(cpu.shared ?? []) / median(cpu.copyEach ?? []) }),
);
