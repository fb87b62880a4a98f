#!/usr/bin/env node
// Format the audit as an HTML report (pattern 9, step 'report' of ops/system-audit.toml).
//
// Input (JSON on stdin, and in the file named by $WEIR_INPUT):
//   {"metrics": <output of collect_metrics.sh>, "analysis": <output of analyse_metrics.py>}
// Output (JSON written to the file named by $WEIR_OUTPUT):
//   {"html": "<!doctype html>...", "subject": "...", "file_name": "audit-db-1-2024-11-05.html"}
'use strict';

const fs = require('fs');

function readInput() {
  const path = process.env.WEIR_INPUT;
  const text = path && fs.existsSync(path) ? fs.readFileSync(path, 'utf8') : fs.readFileSync(0, 'utf8');
  return JSON.parse(text || '{}');
}

function writeOutput(result) {
  const text = JSON.stringify(result);
  if (process.env.WEIR_OUTPUT) {
    fs.writeFileSync(process.env.WEIR_OUTPUT, text);
  } else {
    process.stdout.write(text + '\n');
  }
}

function escape(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function main() {
  const { metrics = {}, analysis = {} } = readInput();
  const host = metrics.hostname || 'unknown host';
  const when = metrics.collected_at || new Date().toISOString();
  const findings = analysis.findings || [];
  const rows = findings.length
    ? findings.map((f) => `<tr class="${escape(f.severity)}"><td>${escape(f.severity)}</td><td>${escape(f.check)}</td><td>${escape(f.message)}</td></tr>`).join('\n')
    : '<tr><td colspan="3">All checks passed.</td></tr>';
  const disks = (metrics.disks || []).map((d) => `<li>${escape(d.mount)}: ${escape(d.used_pct)}% used</li>`).join('\n');
  const load = metrics.load || {};
  const memory = metrics.memory || {};
  const html = `<!doctype html>
<html><head><meta charset="utf-8"><title>Audit ${escape(host)}</title>
<style>body{font-family:sans-serif} td{padding:2px 8px} .critical{background:#fdd} .warning{background:#ffd}</style></head>
<body>
<h1>System audit: ${escape(host)}</h1>
<p>Collected ${escape(when)}. Result: <strong>${escape(analysis.summary || 'no analysis')}</strong></p>
<table><tr><th>severity</th><th>check</th><th>finding</th></tr>
${rows}
</table>
<h2>Metrics</h2>
<ul><li>Load: ${escape(load['1m'])} / ${escape(load['5m'])} / ${escape(load['15m'])} on ${escape(metrics.cpus)} CPUs</li>
<li>Memory: ${escape(memory.used_pct)}% used</li>
${disks}</ul>
</body></html>
`;
  writeOutput({
    html,
    subject: `[audit ${analysis.worst || 'ok'}] ${host}: ${analysis.summary || 'no analysis'}`,
    file_name: `audit-${host.replace(/[^A-Za-z0-9_.-]/g, '_')}-${when.slice(0, 10)}.html`,
  });
}

main();
