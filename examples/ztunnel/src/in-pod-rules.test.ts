// The in-pod capture rules as commands: istio-cni's order (returns before each redirect), the ports
// they send to, and refusals of what iptables would misread.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { inPodDnsCapture, inPodTcpCapture } from "./in-pod.js";

const text = (commands: string[][]) => commands.map((c) => c.join(" "));

describe("inPodTcpCapture", () => {
  it("returns the proxy's own, loopback, the pod itself and excluded ports before redirecting", () => {
    const rules = text(inPodTcpCapture("10.4.0.7", { excludePorts: ["9090", "15100:15199"] })).filter(
      (r) => !r.startsWith("ip6tables "),
    );
    assert.ok(rules.every((r) => r.startsWith("iptables -w -t nat ")));
    const at = (rule: string) => {
      const i = rules.indexOf(`iptables -w -t nat ${rule}`);
      assert.ok(i >= 0, `${rule} in ${rules.join("\n")}`);
      return i;
    };
    const redirectOut = at("-A AMBIENT_OUTPUT -p tcp -j REDIRECT --to-ports 15001");
    for (const rule of [
      "-A AMBIENT_OUTPUT -m mark --mark 0x539/0xfff -j RETURN",
      "-A AMBIENT_OUTPUT -d 169.254.7.127/32 -p tcp -j RETURN",
      "-A AMBIENT_OUTPUT -o lo -j RETURN",
      "-A AMBIENT_OUTPUT -d 10.4.0.7/32 -j RETURN",
      "-A AMBIENT_OUTPUT -p tcp --dport 9090 -j RETURN",
      "-A AMBIENT_OUTPUT -p tcp --dport 15100:15199 -j RETURN",
    ]) {
      assert.ok(at(rule) < redirectOut, rule);
    }
    assert.ok(at("-N AMBIENT_OUTPUT") < at("-A OUTPUT -p tcp -j AMBIENT_OUTPUT"));
    const redirectIn = at("-A AMBIENT_PREROUTING -p tcp -j REDIRECT --to-ports 15006");
    for (const rule of [
      "-A AMBIENT_PREROUTING -i lo -j RETURN",
      // The kubelet's probes, SNATed on the node to istio-cni's probe address, skip the proxy.
      "-A AMBIENT_PREROUTING -s 169.254.7.127/32 -p tcp -j RETURN",
      "-A AMBIENT_PREROUTING -p tcp --dport 15008 -j RETURN",
      "-A AMBIENT_PREROUTING -p tcp --dport 9090 -j RETURN",
    ]) {
      assert.ok(at(rule) < redirectIn, rule);
    }
    // Redirects are the last rule of their chain.
    assert.equal(redirectIn, rules.length - 1);
    assert.equal(rules.filter((r) => r.includes("AMBIENT_OUTPUT")).at(-1), rules[redirectOut]);
  });

  it("refuses IPv6 TCP both ways, loopback, accepted connections and excluded ports aside", () => {
    const rules = text(inPodTcpCapture("10.4.0.7", { excludePorts: ["9090"] })).filter((r) =>
      r.startsWith("ip6tables "),
    );
    for (const [chain, lo] of [
      ["INPUT", "-i"],
      ["OUTPUT", "-o"],
    ] as const) {
      assert.deepEqual(
        rules.filter((r) => r.startsWith(`ip6tables -w -A ${chain} `)),
        [
          `ip6tables -w -A ${chain} ${lo} lo -j ACCEPT`,
          `ip6tables -w -A ${chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`,
          `ip6tables -w -A ${chain} -p tcp --dport 9090 -j ACCEPT`,
          `ip6tables -w -A ${chain} -p tcp -j REJECT --reject-with tcp-reset`,
        ],
      );
    }
  });

  it("sends to the listeners given", () => {
    const rules = text(
      inPodTcpCapture("10.4.0.7", { ports: { outbound: 25001, inboundPlaintext: 25006, hbone: 25008 } }),
    );
    assert.ok(rules.some((r) => r.endsWith("REDIRECT --to-ports 25001")));
    assert.ok(rules.some((r) => r.endsWith("REDIRECT --to-ports 25006")));
    assert.ok(rules.some((r) => r.endsWith("--dport 25008 -j RETURN")));
    assert.ok(!rules.some((r) => /1500[168]/.test(r)));
  });

  it("refuses a pod IP that is not IPv4 and port specs iptables would misread", () => {
    for (const ip of ["fd00::7", "10.4.0", "pod-a"]) {
      assert.throws(() => inPodTcpCapture(ip), { code: "ERR_ZTUNNEL_INVALID_OPTION" });
    }
    for (const ports of ["0", "70000", "200:100", "80,443", "80-90", "", ":80"]) {
      assert.throws(() => inPodTcpCapture("10.4.0.7", { excludePorts: [ports] }), {
        code: "ERR_ZTUNNEL_INVALID_OPTION",
      });
    }
  });

  it("leaves DNS to its own rules, installed first", () => {
    const dns = text(inPodDnsCapture()).filter((r) => r.includes(" -t nat "));
    assert.deepEqual(
      dns.map((r) => r.split(" -p ")[1]?.split(" ")[0]),
      ["udp", "tcp"],
    );
    assert.ok(dns.every((r) => r.includes("--dport 53") && r.endsWith("--to-ports 15053")));
    // A resolver inside the pod itself (on loopback) is left alone, as istio-cni leaves it.
    assert.ok(dns[0]?.includes("-A OUTPUT ! -o lo -p udp"), dns[0]);
    assert.ok(dns[1]?.includes("-A OUTPUT ! -d 127.0.0.1/32 -p tcp"), dns[1]);
  });
  it("tracks the proxy's DNS flows in a conntrack zone of their own", () => {
    // The proxy's queries out and every reply from port 53 coming in: zone 1, apart from the app's
    // flows, so a source port one of them used does not carry the other's flow (test/dns-capture-conntrack).
    assert.deepEqual(
      text(inPodDnsCapture()).filter((r) => r.includes(" -t raw ")),
      [
        "iptables -w -t raw -A OUTPUT -p udp -m mark --mark 0x539/0xfff --dport 53 -j CT --zone 1",
        "iptables -w -t raw -A PREROUTING -p udp -m mark ! --mark 0x539/0xfff --sport 53 -j CT --zone 1",
      ],
    );
  });
});
