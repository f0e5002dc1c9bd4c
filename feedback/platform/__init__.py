"""Cross-cutting services of the platform: roles, the audit log, the outbox, throttling, the
JSON parser, errors, rendering untrusted text, the middleware and the signals between apps."""
