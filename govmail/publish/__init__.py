"""What a province publishes: its DNS zone (`govmail dns`, dns.py; read back from a resolver,
dnsquery.py) and its directory for the provincial portal (HTML, CSV, vCard: portal.py).

May import: data, render (the page template).
"""

