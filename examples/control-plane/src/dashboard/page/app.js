// The live mesh page: draws the control plane's /dashboard/events snapshots as SVG. Workloads sit in a
// column per node, boxed by namespace; edges are the flows of the last minute. Every text from the
// mesh goes in with textContent, never as markup.
const SVG = "http://www.w3.org/2000/svg";
const COLUMN_WIDTH = 220;
const COLUMN_GAP = 210;
const BOX_WIDTH = 184;
const BOX_HEIGHT = 38;
const ROW_GAP = 14;
// Room above the columns for edges that arc over a lane.
const TOP = 100;

let snapshot;
let selected;
let lastUpdate = 0;

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, value, cls) {
  const t = el("text", { x, y, class: cls ?? "" }, parent);
  t.textContent = value;
  return t;
}

function html(tag, value, cls) {
  const node = document.createElement(tag);
  if (value !== undefined) node.textContent = value;
  if (cls) node.className = cls;
  return node;
}

function rate(bytesPerSecond) {
  if (bytesPerSecond >= 1024 * 1024) return `${(bytesPerSecond / 1024 / 1024).toFixed(1)} MB/s`;
  if (bytesPerSecond >= 1024) return `${(bytesPerSecond / 1024).toFixed(1)} kB/s`;
  return `${bytesPerSecond.toFixed(bytesPerSecond < 10 ? 1 : 0)} B/s`;
}

function shortIdentity(id) {
  const m = /\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id ?? "");
  return m ? `${m[1]}/sa/${m[2]}` : (id ?? "");
}

/**
 * Positions: a column per node ("" = outside the mesh, last), namespaces stacked inside, and the
 * waypoints in a lane of their own after the first node, so client -> waypoint -> service reads left
 * to right (each waypoint still names its node).
 */
function layout(data) {
  const nodes = [...data.nodes.filter((n) => n !== ""), ...(data.nodes.includes("") ? [""] : [])];
  const lanes = nodes.map((node) => ({ node, waypoints: false }));
  if (data.workloads.some((w) => w.waypoint))
    lanes.splice(Math.min(1, lanes.length), 0, { node: "", waypoints: true });
  const positions = new Map();
  const columns = [];
  let height = 0;
  lanes.forEach((lane, i) => {
    const x = 20 + i * (COLUMN_WIDTH + COLUMN_GAP);
    let y = TOP + 46;
    const groups = [];
    for (const ns of data.namespaces) {
      const members = data.workloads.filter((w) =>
        lane.waypoints
          ? w.waypoint && w.namespace === ns
          : !w.waypoint && w.node === lane.node && w.namespace === ns,
      );
      if (members.length === 0) continue;
      const top = y;
      y += 22;
      for (const w of members) {
        positions.set(w.id, { x: x + (COLUMN_WIDTH - BOX_WIDTH) / 2, y, column: i });
        y += BOX_HEIGHT + ROW_GAP;
      }
      groups.push({ ns, top, bottom: y });
      y += 10;
    }
    columns.push({ ...lane, x, groups, bottom: y });
    height = Math.max(height, y);
  });
  const width = 40 + lanes.length * COLUMN_WIDTH + Math.max(0, lanes.length - 1) * COLUMN_GAP + 120;
  return { columns, positions, width, height: height + 40 };
}

function edgePath(a, b, bend) {
  const ay = a.y + BOX_HEIGHT / 2;
  const by = b.y + BOX_HEIGHT / 2;
  if (a.column === b.column) {
    // Same node: an arc out to the right of the column.
    const x = a.x + BOX_WIDTH;
    const out = 50 + Math.abs(ay - by) * 0.25 + bend;
    return {
      d: `M${x},${ay} C${x + out},${ay} ${x + out},${by} ${x},${by}`,
      mx: x + out * 0.75,
      my: (ay + by) / 2,
    };
  }
  const forward = b.column > a.column;
  const x1 = forward ? a.x + BOX_WIDTH : a.x;
  const x2 = forward ? b.x : b.x + BOX_WIDTH;
  const dx = (x2 - x1) * 0.45;
  if (Math.abs(b.column - a.column) > 1) {
    // Over the lanes in between, not through their boxes.
    const cy = Math.max(0, TOP - 80 + Math.abs(bend) - (Math.min(ay, by) - TOP) * 0.3);
    const peak = 0.25 * ((ay + by) / 2) + 0.75 * cy;
    return {
      d: `M${x1},${ay} C${x1 + dx},${cy} ${x2 - dx},${cy} ${x2},${by}`,
      mx: (x1 + x2) / 2,
      my: peak,
    };
  }
  const c1y = ay + bend;
  const c2y = by + bend;
  return {
    d: `M${x1},${ay} C${x1 + dx},${c1y} ${x2 - dx},${c2y} ${x2},${by}`,
    mx: (x1 + x2) / 2,
    my: (ay + by) / 2 + bend * 0.75,
  };
}

function edgeLabel(e) {
  if (!e.allowed) {
    const n = e.connections + e.requests;
    return `✕ ${n} refused · ${e.deniedBy.join(", ") || "policy"}`;
  }
  const parts = [rate(e.bytesPerSecond)];
  if (e.open > 0) parts.push(`${e.open} open`);
  parts.push(`${e.connections} conn`);
  if (e.requests > 0) parts.push(`${e.requests} req`);
  if (e.mtls) parts.push("mTLS");
  return parts.join(" · ");
}

function draw(data) {
  const svg = document.getElementById("graph");
  const { columns, positions, width, height } = layout(data);
  svg.replaceChildren();
  // Scales down to the window, never up.
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.maxWidth = `${width}px`;
  const defs = el("defs", {}, svg);
  for (const id of ["arrow-mtls", "arrow-plain", "arrow-denied"]) {
    const m = el(
      "marker",
      {
        id,
        viewBox: "0 0 10 10",
        refX: 9,
        refY: 5,
        markerWidth: 7,
        markerHeight: 7,
        orient: "auto-start-reverse",
      },
      defs,
    );
    el("path", { d: "M0,0 L10,5 L0,10 z" }, m);
  }

  const ztunnels = new Map(data.proxies.filter((p) => p.kind === "ztunnel").map((p) => [p.name, p]));
  for (const c of columns) {
    el(
      "rect",
      { x: c.x, y: TOP, width: COLUMN_WIDTH, height: c.bottom - TOP, rx: 10, class: "column-box" },
      svg,
    );
    const title = c.waypoints ? "waypoints" : c.node === "" ? "outside the mesh" : `node ${c.node}`;
    text(svg, c.x + 12, TOP + 18, title, "column-title");
    const z = ztunnels.get(c.node);
    if (c.waypoints) {
      const waypoints = data.proxies.filter((p) => p.kind === "waypoint");
      text(
        svg,
        c.x + 12,
        TOP + 34,
        waypoints.map((p) => `${p.name} ${p.up ? "up" : "down"}`).join(", ") || "no waypoint read",
        `column-sub${waypoints.every((p) => p.up) ? "" : " down"}`,
      );
    } else if (c.node !== "") {
      const sub = text(
        svg,
        c.x + 12,
        TOP + 34,
        z === undefined
          ? "ztunnel not read"
          : z.up
            ? `ztunnel ${z.admin} up`
            : `ztunnel down: ${z.error ?? ""}`,
        `column-sub${z?.up ? "" : " down"}`,
      );
      sub.setAttribute("data-ztunnel", c.node);
    }
    for (const g of c.groups) {
      el(
        "rect",
        {
          x: c.x + 8,
          y: g.top,
          width: COLUMN_WIDTH - 16,
          height: g.bottom - g.top,
          rx: 6,
          class: "namespace-box",
        },
        svg,
      );
      text(svg, c.x + 16, g.top + 14, `namespace ${g.ns}`, "namespace-title");
    }
  }

  const edgeLayer = el("g", { class: "edges" }, svg);
  const labelLayer = el("g", { class: "labels" }, svg);
  const pairs = new Map();
  const placed = [];
  for (const e of data.edges) {
    const a = positions.get(e.source);
    const b = positions.get(e.target);
    if (!a || !b) continue;
    // Two edges between the same pair (allowed and refused, or both ways) bend apart.
    const pair = [e.source, e.target].sort().join("|");
    const index = pairs.get(pair) ?? 0;
    pairs.set(pair, index + 1);
    const bend = index === 0 ? 0 : index % 2 === 1 ? 26 * Math.ceil(index / 2) : -26 * Math.ceil(index / 2);
    const { d, mx, my } = edgePath(a, b, bend);
    const kind = e.allowed ? "allowed" : "denied";
    const path = el(
      "path",
      {
        d,
        class: `edge ${kind}${e.mtls ? " mtls" : ""}`,
        "data-id": e.id,
        "data-source": e.source,
        "data-target": e.target,
        "marker-end": `url(#arrow-${e.allowed ? (e.mtls ? "mtls" : "plain") : "denied"})`,
      },
      edgeLayer,
    );
    const title = el("title", {}, path);
    title.textContent = [
      `${e.source} → ${e.target}`,
      `source identity: ${e.sourceIdentity ?? "unknown"}`,
      `destination identity: ${e.targetIdentity ?? "unknown"}`,
      e.mtls ? "mutual TLS (HBONE)" : "no mutual TLS seen",
      ...(e.services.length ? [`service: ${e.services.join(", ")}`] : []),
      ...(e.allowed ? [] : [`refused by ${e.deniedBy.join(", ")}`]),
      `last seen ${new Date(e.lastSeen).toLocaleTimeString()}`,
    ].join("\n");
    const g = el("g", { class: `edge-label ${kind}`, "data-edge": e.id }, labelLayer);
    const first = edgeLabel(e);
    const second = [e.sourceIdentity, e.targetIdentity]
      .map((id) => (id ? shortIdentity(id) : "?"))
      .join(" → ");
    const t1 = text(g, mx, my - 2, first);
    const t2 = text(g, mx, my + 11, second);
    for (const t of [t1, t2]) t.setAttribute("text-anchor", "middle");
    // Labels do not cover each other: a label that would is moved down until it fits.
    const w = Math.max(first.length, second.length) * 5.6 + 8;
    let ly = my;
    while (placed.some((b) => Math.abs(b.x - mx) < (b.w + w) / 2 && Math.abs(b.y - ly) < 30)) ly += 31;
    placed.push({ x: mx, y: ly, w });
    t1.setAttribute("y", String(ly - 2));
    t2.setAttribute("y", String(ly + 11));
    const bg = el("rect", { x: mx - w / 2, y: ly - 13, width: w, height: 28, rx: 4 });
    g.insertBefore(bg, t1);
  }

  for (const w of data.workloads) {
    const p = positions.get(w.id);
    if (!p) continue;
    const cls = [
      "workload",
      w.waypoint ? "waypoint" : "",
      w.node === "" ? "outside" : "",
      w.id === selected ? "selected" : "",
    ];
    const g = el("g", { class: cls.filter(Boolean).join(" "), "data-id": w.id, tabindex: 0 }, svg);
    el("rect", { x: p.x, y: p.y, width: BOX_WIDTH, height: BOX_HEIGHT, rx: 7 }, g);
    text(g, p.x + 10, p.y + 16, w.waypoint ? `◆ ${w.name} · ${w.node}` : w.name, "name");
    // A workload keyed by uid (a ServiceEntry's endpoint) shares its name with others: its address tells it apart.
    const byUid = w.id !== `${w.namespace}/${w.name}` && w.address !== "";
    text(g, p.x + 10, p.y + 30, w.identity && !byUid ? shortIdentity(w.identity) : w.address, "sub");
    g.addEventListener("click", () => select(w.id));
    g.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") select(w.id);
    });
  }
}

function details(data) {
  const aside = document.getElementById("details");
  const w = data.workloads.find((x) => x.id === selected);
  if (!w) {
    aside.replaceChildren(
      html(
        "p",
        "Click a workload to see its identity, certificate, services, policies and recent decisions.",
        "hint",
      ),
    );
    return;
  }
  const parts = [html("h2", `${w.waypoint ? "waypoint " : ""}${w.id}`)];
  const section = (title, ...children) => {
    parts.push(html("h3", title), ...children);
  };
  const list = (items, empty) => {
    if (items.length === 0) return html("p", empty, "hint");
    const ul = html("ul");
    for (const item of items) ul.appendChild(html("li", item));
    return ul;
  };
  const id = html("code", w.identity || "none (outside the mesh)");
  id.dataset.field = "identity";
  section("Identity", id);
  section("Node and address", html("p", `${w.node || "no node"} · ${w.address}`));
  if (w.certificate) {
    const left = Date.parse(w.certificate.notAfter) - Date.now();
    const hours = Math.round(left / 360000) / 10;
    const p = html(
      "p",
      `expires ${new Date(w.certificate.notAfter).toLocaleString()} (${w.certificate.expired ? "expired" : `in ${hours} h`}), reported by ${w.certificate.reportedBy}`,
      w.certificate.expired ? "expired" : "",
    );
    p.dataset.field = "certificate";
    section("Certificate", p);
  } else {
    section("Certificate", html("p", "no proxy reports one", "hint"));
  }
  section("Services", list(w.services, "none"));
  if (w.usesWaypoint)
    section("Waypoint", html("p", `traffic to it goes through the waypoint at ${w.usesWaypoint}`));
  const policies = list(w.policies, "none select it");
  policies.dataset.field = "policies";
  section("Policies that select it", policies);
  if (w.decisions.length === 0) {
    section(`Decisions (last ${data.windowSeconds} s)`, html("p", "none", "hint"));
  } else {
    const table = html("table", undefined, "decisions");
    table.dataset.field = "decisions";
    for (const d of w.decisions) {
      const tr = html("tr");
      tr.appendChild(html("td", new Date(d.time).toLocaleTimeString()));
      tr.appendChild(html("td", d.allowed ? "allow" : "deny", d.allowed ? "allow" : "deny"));
      tr.appendChild(html("td", `${d.direction === "in" ? "from" : "to"} ${d.peer}`));
      tr.appendChild(
        html("td", `${d.layer}${d.count > 1 ? ` ×${d.count}` : ""}${d.by ? ` · by ${d.by}` : ""}`),
      );
      table.appendChild(tr);
    }
    section(`Decisions (last ${data.windowSeconds} s)`, table);
  }
  aside.replaceChildren(...parts);
}

function header(data) {
  const status = document.getElementById("status");
  status.textContent = `updated ${new Date(data.generatedAt).toLocaleTimeString()}`;
  status.className = "status live";
  const proxies = document.getElementById("proxies");
  proxies.replaceChildren();
  for (const p of data.proxies) {
    const span = html("span", `${p.kind} ${p.name} ${p.up ? "up" : "down"}  `, p.up ? "up" : "down");
    if (!p.up && p.error) span.title = p.error;
    proxies.appendChild(span);
  }
}

function render() {
  if (!snapshot) return;
  header(snapshot);
  draw(snapshot);
  details(snapshot);
}

function select(id) {
  selected = id;
  render();
}

function receive(data) {
  snapshot = data;
  lastUpdate = Date.now();
  document.body.dataset.generatedAt = data.generatedAt;
  render();
}

// Server-Sent Events, and a poll of /dashboard/data if the stream goes quiet for 3 s (a proxy in
// between that buffers, or the control plane restarting).
const events = new EventSource("/dashboard/events");
events.addEventListener("snapshot", (ev) => receive(JSON.parse(ev.data)));
setInterval(async () => {
  if (Date.now() - lastUpdate < 3000) return;
  document.getElementById("status").className = "status stale";
  try {
    const res = await fetch("/dashboard/data", { cache: "no-store" });
    if (res.ok) receive(await res.json());
  } catch {
    // The next tick tries again.
  }
}, 1000);
