"""Events out: webhooks an admin registers, signed POSTs delivered by the worker with retries.

targets.py (where a webhook may POST: the SSRF checks), sending.py (one signed attempt),
events.py (the events and the signals they come from), services.py (register, record, deliver,
retry), api.py (the admin's REST routes).
"""
