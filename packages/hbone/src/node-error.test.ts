import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HboneError } from "./errors.js";
import { http2ErrorName, resetError, toHboneError } from "./node-error.js";

const nodeError = (code: string, message = code) => Object.assign(new Error(message), { code });

describe("toHboneError", () => {
  it("maps Node error codes to stable HBONE codes", () => {
    const table: [string, string][] = [
      ["ECONNREFUSED", "ERR_HBONE_CONNECTION"],
      ["ECONNRESET", "ERR_HBONE_CONNECTION"],
      ["EPIPE", "ERR_HBONE_CONNECTION"],
      ["ERR_HTTP2_GOAWAY_SESSION", "ERR_HBONE_CONNECTION"],
      ["ERR_HTTP2_SESSION_ERROR", "ERR_HBONE_CONNECTION"],
      ["ERR_HTTP2_STREAM_ERROR", "ERR_HBONE_RESET"],
      ["ERR_HTTP2_INVALID_HEADER_VALUE", "ERR_HBONE_PROTOCOL"],
      ["ETIMEDOUT", "ERR_HBONE_TIMEOUT"],
      ["CERT_HAS_EXPIRED", "ERR_HBONE_TLS"],
      ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "ERR_HBONE_TLS"],
      ["ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", "ERR_HBONE_TLS"],
      ["ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL", "ERR_HBONE_PROTOCOL"],
      ["ERR_TLS_CERT_ALTNAME_INVALID", "ERR_HBONE_IDENTITY"],
      ["ABORT_ERR", "ERR_HBONE_ABORTED"],
    ];
    for (const [nodeCode, code] of table) {
      const e = toHboneError(nodeError(nodeCode), "dial 10.0.0.1:15008");
      assert.equal(e.code, code, nodeCode);
      assert.equal(e.nodeCode, nodeCode);
      assert.match(e.message, /^dial 10\.0\.0\.1:15008: /);
      assert.ok(e.cause instanceof Error);
    }
  });

  it("passes HboneErrors through and handles non-errors", () => {
    const original = new HboneError("ERR_HBONE_REFUSED", "no", { status: 401 });
    assert.equal(toHboneError(original, "ctx"), original);
    assert.equal(toHboneError("weird").code, "ERR_HBONE_CONNECTION");
    const abort = new Error("aborted");
    abort.name = "AbortError";
    assert.equal(toHboneError(abort).code, "ERR_HBONE_ABORTED");
  });

  it("names HTTP/2 error codes in reset errors", () => {
    assert.equal(http2ErrorName(8), "CANCEL");
    assert.equal(http2ErrorName(99), "code 99");
    const e = resetError(7, "peer");
    assert.equal(e.code, "ERR_HBONE_RESET");
    assert.equal(e.rstCode, 7);
    assert.match(e.message, /REFUSED_STREAM/);
  });

  it("brands HboneError so instanceof works across copies", () => {
    const foreign = Object.create(Object.getPrototypeOf(new HboneError("ERR_HBONE_CLOSED", "x"))) as object;
    assert.ok(foreign instanceof HboneError);
    const lookalike = { [Symbol.for("@ambient/hbone.error")]: true };
    assert.ok(lookalike instanceof HboneError);
    assert.ok(!(new Error("plain") instanceof HboneError));
    const e = new HboneError("ERR_HBONE_TIMEOUT", "slow");
    assert.equal(e.name, "HboneError");
    assert.equal(e.code, "ERR_HBONE_TIMEOUT");
  });
});
