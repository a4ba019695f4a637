// Bastion Bank: the security events page. Polls /events.json and draws the
// refusals by kind as an SVG bar chart. Event records carry attacker-chosen text
// (paths, report fields): they are written with textContent only.
"use strict";

(function () {
  const POLL_MS = 2000;
  const MAX_POLLS = 1800; // one hour of polling, then the page asks for a reload
  const SVG = "http://www.w3.org/2000/svg";
  const chart = document.getElementById("events-chart");
  const rows = document.getElementById("events-rows");
  const COLUMNS = ["timestamp", "kind", "reason", "status", "method", "path", "client"];

  function svg(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawChart(byKind) {
    const kinds = Object.entries(byKind).slice(0, 8);
    const most = Math.max(1, ...kinds.map(function (entry) { return entry[1]; }));
    chart.replaceChildren();
    if (kinds.length === 0) {
      chart.append(svg("text", { x: 10, y: 100, class: "chart-empty" }, "No refusals yet."));
      return;
    }
    const rowHeight = 200 / kinds.length;
    kinds.forEach(function ([kind, count], index) {
      const y = index * rowHeight;
      const width = Math.max(2, (count / most) * 330);
      chart.append(svg("text", { x: 0, y: y + rowHeight / 2 + 5, class: "chart-label" }, kind));
      chart.append(svg("rect", { x: 220, y: y + 4, width: width, height: rowHeight - 8, class: "chart-bar" }));
      chart.append(svg("text", { x: 226 + width, y: y + rowHeight / 2 + 5, class: "chart-count" }, String(count)));
    });
  }

  function drawRows(records) {
    const fresh = records.map(function (record) {
      const row = document.createElement("tr");
      for (const column of COLUMNS) {
        const cell = document.createElement("td");
        cell.textContent = record[column] === undefined ? "" : String(record[column]);
        row.append(cell);
      }
      const details = document.createElement("td");
      const code = document.createElement("code");
      code.textContent = JSON.stringify(record.details || {});
      details.append(code);
      row.append(details);
      return row;
    });
    rows.replaceChildren(...fresh);
  }

  let polls = 0;
  async function poll() {
    polls += 1;
    try {
      const answer = await fetch("/events.json", { headers: { Accept: "application/json" } });
      if (answer.ok) {
        const body = await answer.json();
        drawChart(body.by_kind);
        drawRows(body.refused);
      }
    } finally {
      if (polls < MAX_POLLS) setTimeout(poll, POLL_MS);
    }
  }

  if (chart && rows) poll();
})();
