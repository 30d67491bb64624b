/**
 * A small DNS toolkit for node proxies: an RFC 1035 message codec, a server over UDP and TCP that
 * hands each query to one handler, and a forwarder that asks upstream resolvers the way a careful
 * stub resolver does. The ambient ztunnel's DNS proxy (port 15053) is built from these: it answers
 * mesh names itself and forwards the rest.
 *
 * @example
 * ```ts
 * import { addressRecord, createDnsForwarder, createDnsServer, readResolvConf, replyTo } from "@ambient/dns";
 *
 * const { nameservers } = await readResolvConf();
 * const upstream = createDnsForwarder({ nameservers: nameservers.map((address) => ({ address })) });
 * const server = createDnsServer({
 *   handler: ({ message, bytes }) => {
 *     const { name } = message.questions[0]!;
 *     if (name.endsWith(".mesh.test")) return replyTo(message, { answers: [addressRecord(name, "10.0.0.7", 30)] });
 *     return upstream.forward(bytes);
 *   },
 * });
 * await server.listen({ host: "127.0.0.1", port: 15053 });
 * ```
 *
 * @packageDocumentation
 */
export { CLASS_IN, RecordType, ResponseCode, recordTypeName } from "./constants.js";
export { DnsError, type DnsErrorCode, type DnsErrorDetails } from "./errors.js";
export {
  createDnsForwarder,
  DnsForwarder,
  type DnsForwarderOptions,
  type ForwardOptions,
  type Nameserver,
} from "./forwarder.js";
export {
  type DnsMessage,
  type DnsQuestion,
  type DnsRecord,
  decodeMessage,
  encodeMessage,
} from "./message.js";
export {
  addressRecord,
  cnameRecord,
  queryMessage,
  type ReplyInit,
  recordAddress,
  recordTarget,
  replyTo,
  udpPayloadLimit,
} from "./records.js";
export { parseResolvConf, type ResolvConf, readResolvConf } from "./resolv-conf.js";
export {
  createDnsServer,
  type DnsHandler,
  type DnsRequest,
  DnsServer,
  type DnsServerOptions,
} from "./server.js";
