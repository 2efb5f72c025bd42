// The live membership page: state from /events (server-sent events), drawn as a
// table and an SVG picture of the mesh. No external code; text only via textContent.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  let self = null;
  const peers = new Map(); // name -> {address, since, rtt, metadata}

  function el(tag, attrs, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ago(epoch) {
    if (!epoch) return "";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 60) return Math.floor(s) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function ms(rtt) {
    return rtt === null || rtt === undefined ? "–" : (rtt * 1000).toFixed(rtt < 0.01 ? 2 : 1) + " ms";
  }

  function renderTable() {
    const body = document.getElementById("members");
    body.replaceChildren();
    for (const name of [...peers.keys()].sort()) {
      const p = peers.get(name);
      const row = el("tr", { "data-node": name });
      row.append(el("td", { class: "mono" }, name));
      row.append(el("td", { class: "mono" }, p.address || ""));
      row.append(el("td", { title: p.since ? new Date(p.since * 1000).toISOString() : "" }, ago(p.since)));
      row.append(el("td", {}, ms(p.rtt)));
      const meta = el("td", { class: "meta" });
      for (const [k, v] of Object.entries(p.metadata || {})) meta.append(el("span", {}, k + "=" + (typeof v === "string" ? v : JSON.stringify(v))));
      row.append(meta);
      body.append(row);
    }
    document.getElementById("empty").style.display = peers.size ? "none" : "block";
    document.getElementById("count").textContent = peers.size + (peers.size === 1 ? " peer" : " peers");
  }

  function renderMesh() {
    const svg = document.getElementById("mesh");
    svg.replaceChildren();
    const names = [self ? self.node : "this node", ...[...peers.keys()].sort()];
    const cx = 200, cy = 200, r = names.length > 1 ? 140 : 0;
    const pos = names.map((_, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / names.length;
      return [cx + r * Math.cos(a), cy + r * Math.sin(a)];
    });
    // Lines: this node's links, and the links each peer reported (its PEERS frame).
    const index = new Map(names.map((n, i) => [n, i]));
    const line = (i, j, own) => svg.append(el("svg:line", { x1: pos[i][0], y1: pos[i][1],
      x2: pos[j][0], y2: pos[j][1], stroke: own ? "#93c5fd" : "#d1d5db", "stroke-width": own ? 2 : 1 }));
    const drawn = new Set();
    for (let i = 1; i < names.length; i++) line(0, i, true);
    for (let i = 1; i < names.length; i++)
      for (const other of peers.get(names[i]).links || []) {
        const j = index.get(other);
        const key = Math.min(i, j) + "-" + Math.max(i, j);
        if (j !== undefined && j > 0 && j !== i && !drawn.has(key)) { drawn.add(key); line(i, j, false); }
      }
    names.forEach((name, i) => {
      const g = el("svg:g", { class: i === 0 ? "self" : "peer", "data-node": name });
      g.append(el("svg:circle", { cx: pos[i][0], cy: pos[i][1], r: 16,
        fill: i === 0 ? "#2563eb" : "#16a34a", stroke: "#fff", "stroke-width": 3 }));
      const below = pos[i][1] >= cy;
      g.append(el("svg:text", { x: pos[i][0], y: pos[i][1] + (below ? 32 : -24), "text-anchor": "middle" }, name));
      svg.append(g);
    });
  }

  function render() { renderTable(); renderMesh(); }

  function note(kind, text) {
    const log = document.getElementById("log");
    const item = el("li", { class: kind }, new Date().toLocaleTimeString() + "  " + text);
    log.prepend(item);
    while (log.children.length > 50) log.lastChild.remove();
  }

  function onStatus(status) {
    self = status;
    document.getElementById("self").textContent = status.node + (status.address ? " · " + status.address : "");
    peers.clear();
    for (const p of status.peers) peers.set(p.node, p);
    render();
  }

  function connect() {
    const conn = document.getElementById("conn");
    const source = new EventSource("/events");
    source.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
    source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "lost"; };
    source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
    source.addEventListener("nodeup", (e) => {
      const up = JSON.parse(e.data);
      peers.set(up.node, { node: up.node, address: up.address, since: up.time, rtt: null, metadata: up.metadata });
      note("up", "▲ " + up.node + " joined");
      render();
    });
    source.addEventListener("nodedown", (e) => {
      const down = JSON.parse(e.data);
      peers.delete(down.node);
      note("down", "▼ " + down.node + " left (" + down.reason + ")");
      render();
    });
  }

  render();
  connect();
  setInterval(renderTable, 5000); // "since" keeps counting
})();
