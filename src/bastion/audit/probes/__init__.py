"""The auditor's probes: one module per area, each a set of named checks.

Every probe is `probe(ctx) -> list[Finding]` (async, except `cookies`, which only
reads what the others saw) and talks to the target only through its
`ProbeContext` (counted, bounded, cookies kept apart). Check ids are stable:

* `headers.*`      the MDN HTTP Observatory tests (`bastion.audit.observatory`)
* `cookies.*`      secure, httponly, samesite, host-prefix
* `csrf.*`         cross-site-origin, null-origin, sec-fetch-site
* `cors.*`         reflect-origin, null-origin
* `hosts.*`        host-header, forwarded-host, unknown-host
* `transport.*`    https-redirect, hsts, trace
* `leakage.*`      not-found, method-not-allowed, malformed-json, oversized-body,
                   error-page, server-banner
* `websocket.*`    foreign-origin, no-auth
* `jwt.*`          alg-none, bad-signature, expired
* `sessions.*`     fixation
* `ratelimit.*`    login

A check that passed is reported as a passed `Finding`. A check that could not run
(no login recipe, no WebSocket route, a route that refused even the legitimate
request) is not reported: "not reported" means "not tested", and the reason is
in `ProbeContext.skipped` and on the progress callback.
"""
