// Benchmarks for @ambient/spiffe. Run with `pnpm bench` in this package (about 15 s).
// Every rate is printed beside a baseline measured in the same run on the same machine.
import { execFileSync } from "node:child_process";
import { createPublicKey, generateKeyPairSync, type JsonWebKey, sign, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCertificateAuthority, createCsr } from "../src/ca.js";
import { generateKeyPair, TrustBundle, verifySvid } from "../src/index.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);

/**
 * Measures two operations in alternating 100 ms slices so both see the same machine load, and
 * prints their rates. Returns [rateA, rateB] in operations per second.
 */
async function compare(
  labelA: string,
  a: () => unknown,
  labelB: string,
  b: () => unknown,
): Promise<[number, number]> {
  for (let i = 0; i < 200; i++) {
    await a();
    await b();
  }
  const totals = [
    { n: 0, ms: 0 },
    { n: 0, ms: 0 },
  ];
  const fns = [a, b];
  const slices = Math.max(2, Math.round((SECONDS * 2 * 1000) / 100));
  for (let slice = 0; slice < slices; slice++) {
    const which = slice % 2;
    const fn = fns[which] as () => unknown;
    const total = totals[which] as { n: number; ms: number };
    const start = performance.now();
    const end = start + 100;
    while (performance.now() < end) {
      for (let i = 0; i < 10; i++) await fn();
      total.n += 10;
    }
    total.ms += performance.now() - start;
  }
  const rates = totals.map((t) => (t.n * 1000) / t.ms) as [number, number];
  console.log(`${labelA.padEnd(44)} ${rates[0].toFixed(0).padStart(8)} /s`);
  console.log(`${labelB.padEnd(44)} ${rates[1].toFixed(0).padStart(8)} /s`);
  return rates;
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
  let next = 0;
  const [rawSign, caSign] = await compare(
    "raw ECDSA P-256 sign (node:crypto)",
    () => sign("sha256", tbsLike, privateKey),
    "ca.sign(csr) incl. CSR signature check",
    () => ca.sign(csrs[next++ % csrs.length] as string, { spiffeId: id }),
  );
  console.log(`ratio ${(caSign / rawSign).toFixed(2)} (goal >= 0.25)\n`);

  // What signing a CSR cannot avoid: importing the CSR's public key and verifying the CSR's
  // signature (proof of possession), besides signing the leaf. Their sum bounds the ratio above.
  const signature = sign("sha256", tbsLike, privateKey);
  const jwks = Array.from({ length: 64 }, () =>
    generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "jwk" }),
  );
  let k = 0;
  const [rawVerify, rawImport] = await compare(
    "raw ECDSA P-256 verify (node:crypto)",
    () => verify("sha256", tbsLike, publicKey, signature),
    "raw P-256 public key import (JWK)",
    () => createPublicKey({ key: jwks[k++ % jwks.length] as JsonWebKey, format: "jwk" }),
  );
  const floor = 1 / (1 / rawSign + 1 / rawVerify + 1 / rawImport);
  console.log(
    `crypto floor of one CSR signing (import + verify + sign): ${floor.toFixed(0)} /s = ${(floor / rawSign).toFixed(2)} of the raw sign rate; ca.sign reaches ${(caSign / floor).toFixed(2)} of that floor\n`,
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
