// Benchmarks for @ambient/spiffe. Run with `pnpm bench` in this package (about 15 s).
// Every rate is printed beside a baseline measured in the same run on the same machine.
import { execFileSync } from "node:child_process";
import {
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  KeyObject,
  sign,
  verify,
  webcrypto,
} from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCertificateAuthority, createCsr } from "../src/ca.js";
import { parseCsr } from "../src/csr.js";
import { childrenOf, readTlv, type Tlv } from "../src/der.js";
import { generateKeyPair, TrustBundle, verifySvid } from "../src/index.js";
import { decodePem } from "../src/pem.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);

/**
 * Measures several operations in rotating 100 ms slices, so all of them see the same machine
 * load, and prints their rates. Returns the rates in operations per second, in argument order.
 */
async function measure(cases: readonly (readonly [string, () => unknown])[]): Promise<number[]> {
  for (let i = 0; i < 200; i++) for (const [, fn] of cases) await fn();
  const totals = cases.map(() => ({ n: 0, ms: 0 }));
  const slices = Math.max(cases.length, Math.round((SECONDS * cases.length * 1000) / 100));
  for (let slice = 0; slice < slices; slice++) {
    const which = slice % cases.length;
    const fn = (cases[which] as readonly [string, () => unknown])[1];
    const total = totals[which] as { n: number; ms: number };
    const start = performance.now();
    const end = start + 100;
    while (performance.now() < end) {
      for (let i = 0; i < 10; i++) await fn();
      total.n += 10;
    }
    total.ms += performance.now() - start;
  }
  const rates = totals.map((t) => (t.n * 1000) / t.ms);
  for (const [i, [label]] of cases.entries()) {
    console.log(`${label.padEnd(50)} ${(rates[i] as number).toFixed(0).padStart(8)} /s`);
  }
  return rates;
}

/** {@link measure} for two operations. */
async function compare(
  labelA: string,
  a: () => unknown,
  labelB: string,
  b: () => unknown,
): Promise<[number, number]> {
  return (await measure([
    [labelA, a],
    [labelB, b],
  ])) as [number, number];
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
}

async function main(): Promise<void> {
  console.log(`@ambient/spiffe bench (node ${process.version}, ${SECONDS} s per measurement)\n`);

  // 1. CA signing vs raw ECDSA P-256 signing.
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const tbsLike = Buffer.alloc(420, 0x5a);
  const ca = await createCertificateAuthority();
  const id = "spiffe://cluster.local/ns/default/sa/bench";
  // Distinct CSRs with distinct keys, as real workloads send (a new key per certificate).
  const csrs: string[] = [];
  for (let i = 0; i < 64; i++) {
    const keys = await generateKeyPair();
    csrs.push(await createCsr({ spiffeId: id, privateKeyPem: keys.privateKeyPem }));
  }
  // What signing a CSR cannot avoid: importing the CSR's public key and verifying the CSR's
  // signature (proof of possession), besides signing the leaf. Their sum bounds ca.sign's rate. All
  // are measured in the same rotating slices, so the ratio to that floor is from one load.
  const signature = sign("sha256", tbsLike, privateKey);
  /** A fresh public key in the three forms Node imports. */
  type Fresh = { spki: Buffer; raw: Buffer; jwk: JsonWebKey };
  const fresh: Fresh[] = Array.from({ length: 64 }, () => {
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      format: "der",
      type: "spki",
    });
    return {
      spki,
      raw: spki.subarray(spki.length - 65),
      jwk: createPublicKey({ key: spki, format: "der", type: "spki" }).export({ format: "jwk" }),
    };
  });
  // Node has three ways to import a P-256 public key, and which is fastest depends on its OpenSSL:
  // the floor takes the fastest, as ca.sign does.
  const imports: [string, (key: Fresh) => KeyObject | Promise<KeyObject>][] = [
    ["JWK", (key) => createPublicKey({ key: key.jwk as JsonWebKey, format: "jwk" })],
    ["SPKI DER", (key) => createPublicKey({ key: key.spki, format: "der", type: "spki" })],
    [
      "WebCrypto raw point",
      async (key) =>
        KeyObject.from(
          await webcrypto.subtle.importKey("raw", key.raw, { name: "ECDSA", namedCurve: "P-256" }, true, [
            "verify",
          ]),
        ),
    ],
  ];
  let k = 0;
  const importRates = await measure(
    imports.map(([label, fn]) => [
      `raw P-256 public key import (${label})`,
      () => fn(fresh[k++ % fresh.length] as Fresh),
    ]),
  );
  const fastest = imports[importRates.indexOf(Math.max(...importRates))] as (typeof imports)[number];
  console.log(`fastest import here: ${fastest[0]}\n`);
  // The same three operations back to back on each CSR's own key, signature and signed bytes, as
  // ca.sign meets them: every key is new to OpenSSL when it is verified with.
  const csrParts = await Promise.all(
    csrs.map(async (pem) => {
      const der = decodePem(pem)[0]?.der as Buffer;
      const [info, , sig] = childrenOf(der, readTlv(der, 0)) as [Tlv, Tlv, Tlv];
      const spki = (await parseCsr(pem)).publicKeySpki;
      const key = createPublicKey({ key: spki, format: "der", type: "spki" });
      return {
        info: der.subarray(info.start, info.end),
        signature: der.subarray(sig.valueStart + 1, sig.end),
        key: { spki, raw: spki.subarray(spki.length - 65), jwk: key.export({ format: "jwk" }) },
      };
    }),
  );
  let next = 0;
  let c = 0;
  const [rawSign, caSign, rawVerify, rawImport, backToBack] = (await measure([
    ["raw ECDSA P-256 sign (node:crypto)", () => sign("sha256", tbsLike, privateKey)],
    [
      "ca.sign(csr) incl. CSR signature check",
      () => ca.sign(csrs[next++ % csrs.length] as string, { spiffeId: id }),
    ],
    ["raw ECDSA P-256 verify (node:crypto)", () => verify("sha256", tbsLike, publicKey, signature)],
    [`raw P-256 public key import (${fastest[0]})`, () => fastest[1](fresh[k++ % fresh.length] as Fresh)],
    [
      "import + verify + sign back to back (CSR keys)",
      async () => {
        const part = csrParts[c++ % csrParts.length] as (typeof csrParts)[number];
        const key = await fastest[1](part.key);
        if (!verify("sha256", part.info, key, part.signature)) throw new Error("CSR did not verify");
        return sign("sha256", tbsLike, privateKey);
      },
    ],
  ])) as [number, number, number, number, number];
  console.log(`ratio ${(caSign / rawSign).toFixed(2)} of the raw sign rate (goal >= 0.25)`);
  const floor = 1 / (1 / rawSign + 1 / rawVerify + 1 / rawImport);
  console.log(
    `crypto floor of one CSR signing (import + verify + sign): ${floor.toFixed(0)} /s = ${(floor / rawSign).toFixed(2)} of the raw sign rate; ca.sign reaches ${(caSign / floor).toFixed(2)} of that floor (goal >= 0.8)`,
  );
  console.log(
    `the three back to back on the CSRs' own keys reach ${(backToBack / floor).toFixed(2)} of that floor; ca.sign reaches ${(caSign / backToBack).toFixed(2)} of them\n`,
  );

  // 2. verifySvid on a 3-certificate chain: leaf <- openssl intermediate <- openssl root.
  const dir = mkdtempSync(join(tmpdir(), "spiffe-bench-"));
  try {
    writeFileSync(
      join(dir, "ext.cnf"),
      [
        "[root]",
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier=hash",
        "[int]",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "keyUsage=critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
        "",
      ].join("\n"),
    );
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(dir, [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "root-key.pem",
      "-out",
      "root-cert.pem",
      "-subj",
      "/O=bench-root",
      "-days",
      "30",
      "-config",
      "ext.cnf",
      "-extensions",
      "root",
    ]);
    openssl(dir, [
      "req",
      "-new",
      ...ec,
      "-keyout",
      "ca-key.pem",
      "-out",
      "ca.csr",
      "-subj",
      "/O=bench-intermediate",
    ]);
    openssl(dir, [
      "x509",
      "-req",
      "-in",
      "ca.csr",
      "-CA",
      "root-cert.pem",
      "-CAkey",
      "root-key.pem",
      "-set_serial",
      "7",
      "-days",
      "30",
      "-extfile",
      "ext.cnf",
      "-extensions",
      "int",
      "-out",
      "ca-cert.pem",
    ]);
    const plugged = await createCertificateAuthority({ cacerts: { dir } });
    const svid = await plugged.issue({ spiffeId: id });
    const bundle = TrustBundle.fromPem("cluster.local", readFileSync(join(dir, "root-cert.pem"), "utf8"));
    const sig = sign("sha256", tbsLike, privateKey);
    const [rawVerify, chainVerify] = await compare(
      "raw ECDSA P-256 verify (node:crypto)",
      () => verify("sha256", tbsLike, publicKey, sig),
      "verifySvid, 3-certificate chain",
      () => verifySvid(svid.certChainPem, bundle),
    );
    console.log(
      `ratio ${((chainVerify * 2) / rawVerify).toFixed(2)} of the raw rate for the chain's 2 signatures (no goal)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
