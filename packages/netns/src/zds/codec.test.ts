import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { descriptorPath, renderDescriptor } from "../../scripts/gen-zds.js";
import { NetnsError } from "../errors.js";
import {
  decodeAck,
  decodeHello,
  decodeRequest,
  encodeAck,
  encodeHello,
  encodeRequest,
  type ZdsRequest,
} from "./codec.js";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("ZDS codec", () => {
  it("matches proto/zds.proto (run `pnpm gen` after editing it)", () => {
    assert.equal(readFileSync(descriptorPath, "utf8"), renderDescriptor());
  });

  it("puts every field at the number istio-cni and ztunnel use", () => {
    // Hand-assembled wire bytes: tag = field << 3 | wire type.
    assert.equal(hex(encodeHello()), "0801"); // ZdsHello.version = 1 (V1)
    assert.equal(hex(encodeAck()), "0a00"); // WorkloadResponse.ack = 1, empty
    assert.equal(hex(encodeAck("no")), "0a040a026e6f"); // Ack.error = 1
    assert.equal(hex(encodeRequest({ type: "snapshot-sent" })), "1a00"); // snapshot_sent = 3
    assert.equal(hex(encodeRequest({ type: "del", uid: "u" })), "1203120175"); // del = 2, DelWorkload.uid = 2
    assert.equal(hex(encodeRequest({ type: "keep", uid: "u" })), "2a030a0175"); // keep = 5, uid = 1
    const add = encodeRequest({
      type: "add",
      uid: "u",
      workloadInfo: { name: "n", namespace: "s", serviceAccount: "a" },
    });
    // add = 1 { uid = 1 "u", workload_info = 2 { name = 1, namespace = 2, service_account = 3 } }
    assert.equal(hex(add), "0a0e" + "0a0175" + "1209" + "0a016e" + "120173" + "1a0161");
  });

  it("round-trips every request", () => {
    const requests: ZdsRequest[] = [
      {
        type: "add",
        uid: "pod-1",
        workloadInfo: { name: "web-0", namespace: "shop", serviceAccount: "web" },
      },
      { type: "add", uid: "pod-2" },
      { type: "keep", uid: "pod-3" },
      { type: "del", uid: "pod-4" },
      { type: "snapshot-sent" },
    ];
    for (const request of requests) assert.deepEqual(decodeRequest(encodeRequest(request)), request);
    assert.deepEqual(decodeAck(encodeAck("failed")), { error: "failed" });
    assert.deepEqual(decodeHello(encodeHello()), { version: 1 });
  });

  it("refuses undecodable bytes and requests without a payload as ERR_ZDS_PROTOCOL", () => {
    const isProtocol = (e: unknown) => e instanceof NetnsError && e.code === "ERR_ZDS_PROTOCOL";
    assert.throws(() => decodeRequest(new Uint8Array([0x0a, 0x05, 0x01])), isProtocol);
    assert.throws(() => decodeRequest(new Uint8Array(0)), isProtocol);
    assert.throws(() => decodeRequest(new Uint8Array([0x22, 0x00])), isProtocol); // field 4: not ours
    assert.throws(() => decodeAck(new Uint8Array(0)), isProtocol);
  });
});
