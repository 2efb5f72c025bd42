"""DNS for the DNS strategies, with no dependency: a sans-I/O message codec
(``codec.py``: A, AAAA and SRV questions and answers) and a small asyncio stub
resolver (``resolver.py``: UDP, TCP when the answer is truncated, a server and
port of your choice)."""
