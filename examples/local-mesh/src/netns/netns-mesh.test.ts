// The netns demo end to end, as root on Linux (skipped with the reason elsewhere): only namespaces
// it creates, in a random private /16 that exists only inside them, all removed afterwards.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { type NetnsMesh, startNetnsMesh } from "./netns-mesh.js";
import { runScenario, type ScenarioResult } from "./scenario.js";
import { netnsUnavailable } from "./topology.js";

const skip = netnsUnavailable();
if (skip !== undefined) console.log(`# netns demo test skipped: ${skip}`);

describe("the demo mesh on network namespaces", { skip: skip ?? false, timeout: 90_000 }, () => {
  const prefix = `amb-${Math.random().toString(36).slice(2, 8)}`;
  let mesh: NetnsMesh | undefined;
  let result: ScenarioResult;
  let made: string[] = [];

  before(async () => {
    mesh = await startNetnsMesh({ net: `10.${100 + Math.floor(Math.random() * 100)}`, prefix });
    made = mesh.topology.all();
    result = await runScenario(mesh);
  });

  after(async () => {
    await mesh?.close();
  });

  it("carries an unmodified curl from sleep to the echo Service over HBONE", () => {
    assert.equal(result.allowed.code, 0, result.allowed.out);
    // The app sees its caller's address (original source), not its own pod's.
    assert.equal(result.allowed.out.trim(), `echo-0 answers ${mesh?.ip.sleep}`);
    const pair = "spiffe://cluster.local/ns/demo/sa/sleep -> spiffe://cluster.local/ns/demo/sa/echo";
    assert.ok(result.metrics.source.includes(pair), `node-a: ${result.metrics.source}`);
    assert.ok(result.metrics.destination.includes(pair), `node-b: ${result.metrics.destination}`);
  });

  it("resolves the Service's short name through the pod's ztunnel (DNS capture)", () => {
    assert.equal(result.byName.code, 0, result.byName.out);
    assert.equal(result.byName.out.trim(), `echo-0 answers ${mesh?.ip.sleep}`);
  });

  it("reaches a ServiceEntry host by the address the control plane allocated and the DNS proxy gave", () => {
    assert.equal(result.byServiceEntry.code, 0, result.byServiceEntry.out);
    assert.equal(result.byServiceEntry.out.trim(), `echo-0 answers ${mesh?.ip.sleep}`);
  });

  it("refuses stranger by policy and plaintext from outside the mesh by STRICT", () => {
    assert.notEqual(result.denied.code, 0, result.denied.out);
    assert.doesNotMatch(result.denied.out, /echo-0 answers/);
    assert.notEqual(result.plaintext.code, 0, result.plaintext.out);
    assert.doesNotMatch(result.plaintext.out, /echo-0 answers/);
  });

  it("closes a live connection when the policy stops allowing it", () => {
    assert.ok(result.liveConnection.linesBefore >= 2, "the stream flowed before the change");
    assert.equal(result.liveConnection.closedAfterPolicyChange, true);
  });

  it("removes every namespace it made", async () => {
    await mesh?.close();
    mesh = undefined;
    const left = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    for (const name of made) assert.doesNotMatch(left, new RegExp(`^${name}\\b`, "m"));
    for (const name of made)
      assert.equal(existsSync(`/etc/netns/${name}`), false, `/etc/netns/${name} removed`);
    assert.ok(made.length >= 6);
  });
});
