#!/usr/bin/env pwsh
# Deliver the HTML audit report to the report store (pattern 9, step 'deliver' of ops/system-audit.toml).
#
# Input (JSON on stdin, and in the file named by $WEIR_INPUT): {"html": "<!doctype html>...", "name": "audit-db-1-2024-11-05.html"}
# Environment (with.env): REPORT_URL  the store folder, e.g. https://reports.example.com/audits
#                         REPORT_TOKEN a bearer token for it (optional)
# Output (JSON written to the file named by $WEIR_OUTPUT): {"delivered": true, "url": "...", "bytes": 1234}
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

if ($env:WEIR_INPUT -and (Test-Path -LiteralPath $env:WEIR_INPUT)) {
    $raw = Get-Content -LiteralPath $env:WEIR_INPUT -Raw
} else {
    $raw = [Console]::In.ReadToEnd()
}
$data = $raw | ConvertFrom-Json

if (-not $env:REPORT_URL) {
    throw 'REPORT_URL is not set: pass the report store URL in with.env'
}
$uri = '{0}/{1}' -f $env:REPORT_URL.TrimEnd('/'), [Uri]::EscapeDataString([string]$data.name)
$headers = @{}
if ($env:REPORT_TOKEN) {
    $headers['Authorization'] = "Bearer $($env:REPORT_TOKEN)"
}
$body = [System.Text.Encoding]::UTF8.GetBytes([string]$data.html)
Invoke-RestMethod -Method Put -Uri $uri -Headers $headers -ContentType 'text/html; charset=utf-8' -Body $body | Out-Null

$result = @{ delivered = $true; url = $uri; bytes = $body.Length } | ConvertTo-Json -Compress
if ($env:WEIR_OUTPUT) {
    Set-Content -LiteralPath $env:WEIR_OUTPUT -Value $result -Encoding utf8NoBOM
} else {
    Write-Output $result
}
