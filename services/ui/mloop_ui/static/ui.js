// mloop web UI: draws the figures the server embedded, and keeps the pipeline table live.
"use strict";

function drawFigures() {
  for (const source of document.querySelectorAll('script[type="application/json"][data-figure]')) {
    const target = source.previousElementSibling;
    if (!target || !target.classList.contains("plot")) continue;
    const figure = JSON.parse(source.textContent);
    // Room for long tick labels (metric and bin names), whatever the figure asked for.
    figure.layout.xaxis = Object.assign({ automargin: true }, figure.layout.xaxis);
    figure.layout.yaxis = Object.assign({ automargin: true }, figure.layout.yaxis);
    window.Plotly.newPlot(target, figure.data, figure.layout, { displaylogo: false, responsive: true });
  }
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function eventRow(event) {
  const row = document.createElement("tr");
  row.className = "fresh";
  cell(row, event.time.replace("T", " ").slice(0, 19));
  cell(row, event.type);
  cell(row, event.subject);
  cell(row, event.service);
  cell(row, event.summary);
  const link = document.createElement("a");
  link.href = "/pipeline?correlation_id=" + encodeURIComponent(event.correlation_id);
  link.textContent = event.correlation_id.slice(0, 8);
  cell(row, "").appendChild(link);
  return row;
}

function followPipeline(table) {
  const status = document.getElementById("feed-status");
  const body = table.querySelector("tbody");
  let after = Number(table.dataset.after || 0);
  const correlation = table.dataset.correlation || "";
  async function poll() {
    try {
      const query = new URLSearchParams({ after: String(after), correlation_id: correlation });
      const response = await fetch("/pipeline/events?" + query, { headers: { Accept: "application/json" } });
      const answer = await response.json();
      if (!response.ok) {
        status.textContent = answer.error || "The UI refused: " + response.status;
        return;
      }
      for (const event of answer.events.slice().reverse()) body.insertBefore(eventRow(event), body.firstChild);
      while (body.rows.length > 500) body.deleteRow(-1);
      after = answer.last_seq;
      status.textContent = answer.connected
        ? "Live: new events appear at the top."
        : "Not connected to the broker (" + answer.problem + "); retrying.";
    } catch (error) {
      status.textContent = "The UI did not answer; retrying.";
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  if (window.Plotly) drawFigures();
  const table = document.getElementById("pipeline");
  if (table) followPipeline(table);
});
