// Which Host headers the admin endpoints answer. A web page can make its own name resolve to
// 127.0.0.1 once it has loaded (DNS rebinding): the browser then sends its requests, same-origin for
// it, to a listener on loopback, with the page's name as Host. A request that names the listener by
// an IP literal or by `localhost` cannot come from such a page (its origin would be that IP or
// localhost, which the attacker does not serve), so those are the Hosts the admin endpoints take.
import { isIPv4, isIPv6 } from "node:net";

/**
 * Whether a request's `Host` names the listener as only a local caller does: an IPv4 literal, a
 * bracketed IPv6 literal or `localhost` (RFC 6761 keeps `localhost` and `*.localhost` on this host),
 * each with an optional port. A request without Host (HTTP/1.0) is taken: no browser sends one.
 */
export function isLocalAuthority(host: string | undefined): boolean {
  if (host === undefined) return true;
  let name: string;
  let port = "";
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end < 0 || !isIPv6(host.slice(1, end))) return false;
    const rest = host.slice(end + 1);
    if (rest !== "" && !rest.startsWith(":")) return false;
    return rest === "" || /^:\d{1,5}$/.test(rest);
  }
  const colon = host.indexOf(":");
  if (colon >= 0) {
    name = host.slice(0, colon);
    port = host.slice(colon);
    if (!/^:\d{1,5}$/.test(port)) return false;
  } else name = host;
  name = name.toLowerCase();
  if (name.endsWith(".")) name = name.slice(0, -1);
  return isIPv4(name) || name === "localhost" || name.endsWith(".localhost");
}
