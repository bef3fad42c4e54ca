"""Vocabulary of the benign corpus (tests/waf/benign.py): names, searches, prose, markdown, code
snippets, paths, and the generators of query parameters, JSON bodies and forms."""
from __future__ import annotations

import base64
import uuid

NAMES = ["Alice Smith", "Seán O'Brien", "Miles O'Connor", "Renée D'Angelo", "Zoë Saldaña", "Jean-Luc Picard",
         "Mary-Kate O'Neil", "Björn Åkesson", "李小龙", "José María Aznar", "Nguyễn Văn An", "Dmitri Ivanov",
         "Aoife Ní Bhriain", "Robert'); Cole", "Anne-Marie d'Artagnan", "Kwame Nkrumah", "Priya Natarajan",
         "Chloé L'Heureux", "Patrick O'Malley-Jones", "Dwayne \"The Rock\" Johnson", "Ali ibn Hasan",
         "Ólafur Arnalds", "Grace Hopper", "Linus Torvalds", "Ada Lovelace", "Sarah O'Hara", "Tom Select",
         "Union Jack Ltd", "Drop Bear Tours", "Oracle Consulting GmbH", "Bobby Tables", "Ian Or", "Marie And"]
USERNAMES = ["alice", "bob_smith", "o.brien", "dev-ops", "admin2", "j.doe", "qa.team", "root.cause", "select_user"]
EMAILS = ["alice@example.com", "sean.obrien@example.ie", "o'connor@example.com", "first.last+tag@gmail.com",
          "user_123@sub.example.co.uk", "info@union-station.org", "sales@drop-shipping.example",
          "admin@localhost", "x@y.z", "renée@exämple.de"]
SEARCHES = ["select a color", "drop down menu", "union station", "1 or 2 items", "O'Brien", "rock 'n' roll",
            "where is my order", "insert coin", "delete account", "update profile", "create table of contents",
            "order by price", "sort by date", "having trouble logging in", "and/or", "this or that",
            "cat food", "ls 460 lexus", "ping pong table", "time warner cable", "find my phone",
            "head and shoulders", "kill bill vol 2", "less is more", "more or less", "echo dot",
            "who is online", "top 10 movies", "date night ideas", "make up", "sleep mask", "benchmark results",
            "java vs python", "c++ tutorial", "node.js streams", "php 8 features", "docker compose up",
            "script writing", "alert banner", "prompt engineering", "confirm email", "document scanner",
            "window blinds", "on sale", "one-on-one", "50% off", "100% cotton", "5'10\" height",
            "what's new", "don't stop believing", "it's a wrap", "<3 emoji", "a < b", "x > 5",
            "size: 10-12", "C:\\Users docs", "path/to/file", "/var/log help", "tar and feathers",
            "sh*t happens", "#hashtag", "@mention", "email me at bob@example.com", "price < $20",
            "mac & cheese", "Tom & Jerry", "AT&T", "R&D budget", "Q&A", "semicolon; usage", "a; b; c",
            "exec summary", "declare independence", "truncate text css",
            "union of sets", "intersect lines", "waitfor", "null island", "true story", "false alarm",
            "#1 bestseller", "--help", "-1 rating", "1=1 mapping", "x=1", "key: value", "{curly}",
            "[brackets]", "(parentheses)", "100$", "$HOME directory", "~/Downloads", "../ relative path",
            "etc.", "et cetera", "i.e. example", "e.g. sample", "so-called", "naïve café", "北京 天气",
            "привет мир", "مرحبا", "emoji 🎉🔥", "ÆØÅ", "ß vs ss"]
WORDS = ["alpha", "beta", "gamma", "delta", "orders", "billing", "checkout", "sync", "worker", "batch"]
REFERERS = ["https://app.example.com/dashboard", "https://www.google.com/", "https://app.example.com/search?q=union+station&page=2",
            "https://shop.example.org/products/red-shoes?utm_source=newsletter&utm_medium=email",
            "https://app.example.com/orders/7f3c2a9e-1b2c-4d5e-8f90-123456789abc/edit",
            "https://docs.example.com/guide/getting-started#install", "android-app://com.example.app/",
            "https://t.co/AbCdEf123", "https://www.bing.com/search?q=select+a+color+scheme"]
FILENAMES = ["report-2024-Q1.pdf", "IMG_2041.PNG", "O'Brien resume (final).pdf", "scan 03.05.2024.pdf",
             "data export.csv", "logo@2x.png", "notes_v2.final.pdf", "Übersicht März.pdf", "photo (1).png"]

PROSE = [
    "Hi team, the deployment went fine; however, we saw a spike in 5xx errors around 14:02 UTC.",
    "I ordered 2 or 3 items last week and only one arrived. Can you check where my order is?",
    "Please select a color and size before adding the item to your cart.",
    "The union station location closes at 9 pm on weekdays -- plan accordingly.",
    "My name is Seán O'Brien and I'd like to update my shipping address.",
    "Great product! Would buy again. 5/5 stars :)",
    "Don't forget: the meeting is at 10:30 (not 11:00) in room B-12.",
    "The drop-down menu doesn't close when I click outside of it on Safari 17.",
    "We're migrating from MySQL to PostgreSQL next quarter; expect some downtime.",
    "Can you explain the difference between a left join and an inner join in simple terms?",
    "Write a haiku about autumn leaves falling on a quiet street.",
    "Summarize the following article in three bullet points and keep it under 100 words.",
    "Translate 'where is the train station?' into German and French.",
    "What is 15% of 240, and how did you calculate it?",
    "The file is at /home/alice/projects/report.pdf, or on the shared drive under Reports\\2024.",
    "Use the URL https://example.com/docs?section=auth&lang=en for the auth docs.",
    "Set the timeout to 30s; if it still fails, try again with --verbose.",
    "He said \"it's fine\" but it's clearly not fine.",
    "Items: apples, oranges, pears, etc. (and maybe grapes).",
    "If you're not sure, choose option A or B; both work.",
    "Order #1234 was shipped on 2024-05-02 via UPS, tracking 1Z999AA10123456784.",
    "Temperature dropped to -5°C overnight; the pipes froze.",
    "Price: $19.99 (was $24.99) -- 20% off until Friday!",
    "I love rock 'n' roll, jazz & blues, and the occasional opera.",
    "Select all the files you want to delete, then press the trash icon.",
    "To create a new table in the UI, click Insert > Table and choose the number of rows.",
    "The script runs every night at 2 am and sends a report by email.",
    "This document explains how the window manager handles focus events.",
    "Alert: your password will expire in 3 days. Please update it from your profile page.",
    "Our cat likes to sleep on the keyboard, which explains the typos.",
    "A < B and C > D, therefore the ordering is preserved.",
    "Run the tests on one core; the other core is busy with the benchmark.",
    "The ratio was 1:2, or roughly 50 percent.",
    "She asked: is it true that 1 + 1 = 2 in every base?",
    "Meet me at the corner of 5th & Main; I'll be wearing a red hat.",
]
MARKDOWN = [
    "# Release notes\n\n- Fixed a crash when the list is empty\n- Added **dark mode**\n- See [the docs](https://docs.example.com/v2/changelog)\n",
    "## Steps to reproduce\n1. Open the app\n2. Click *Settings*\n3. Toggle `sync` on\n\n> Expected: sync starts\n> Actual: nothing happens",
    "Here is the config:\n\n```yaml\nserver:\n  port: 8080\n  host: 0.0.0.0\n```\n",
    "| Name | Qty |\n|---|---|\n| Apples | 3 |\n| Pears | 5 |\n",
    "![screenshot](https://cdn.example.com/img/shot-01.png)\n\nThe button is misaligned.",
    "Use `git rebase -i HEAD~3` to squash the last three commits, then force-push.",
    "**Note:** the API returns `null` when the field is missing, not an empty string.",
    "Links: <https://example.com> and [local file](./docs/setup.md)",
    "- [x] write tests\n- [ ] update README\n- [ ] tag v1.2.0",
    "See section 3.2 (\"Error handling\") -- it covers retries & backoff.",
]
CODE = [
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "const total = items.reduce((sum, x) => sum + x.price, 0);\nconsole.log(`Total: ${total}`);",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)",
    "func main() {\n\tfmt.Println(\"hello, world\")\n}",
    "SELECT_LIMIT = 50  # page size used by the list endpoint",
    "import json\nwith open('data.json') as f:\n    data = json.load(f)",
    "let x = a > b ? a : b;",
    "public static void main(String[] args) { System.out.println(\"Hi\"); }",
    "if (user && user.isAdmin) { showPanel(); }",
    "fn main() { let v: Vec<i32> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "x = [n * n for n in nums if n > 0]",
    "body { margin: 0; font-family: system-ui, sans-serif; }",
    "<div class=\"card\"><h2>Title</h2><p>Some text</p></div>",
    "<p>Hello <b>world</b>, visit <a href=\"https://example.com\">our site</a>.</p>",
    "<img src=\"https://cdn.example.com/a.png\" alt=\"logo\" width=\"120\">",
    "array.map(item => item.id).filter(Boolean)",
    "class User:\n    def __init__(self, name):\n        self.name = name",
    "await fetchUser(id).then(res => res.json())",
]


def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128)))


def _date(rng):
    return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _ts(rng):
    return _date(rng) + f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def _text(rng):
    return rng.choice(PROSE + MARKDOWN + CODE + SEARCHES)


QUERY_PARAMS = [
    ("page", lambda r: str(r.randint(1, 50))), ("per_page", lambda r: r.choice(["10", "25", "100"])),
    ("sort", lambda r: r.choice(["created_at", "-updated_at", "name", "price,desc", "date"])),
    ("order", lambda r: r.choice(["asc", "desc"])), ("q", lambda r: r.choice(SEARCHES)),
    ("search", lambda r: r.choice(SEARCHES)), ("filter[status]", lambda r: r.choice(["active", "pending,shipped"])),
    ("fields", lambda r: "id,name,email,created_at"), ("include", lambda r: r.choice(["author", "items.product"])),
    ("since", _ts), ("until", _date), ("lang", lambda r: r.choice(["en-US", "de", "pt-BR"])),
    ("redirect_uri", lambda r: r.choice(["https://app.example.com/callback", "https://app.example.com/cb?next=/home"])),
    ("return_to", lambda r: r.choice(["/dashboard", "/orders/123?tab=items", "https://shop.example.org/cart"])),
    ("utm_source", lambda r: r.choice(["newsletter", "google", "twitter"])), ("email", lambda r: r.choice(EMAILS)),
    ("tags", lambda r: r.choice(["red,blue", "sale", "new;featured", "c++,c#"])), ("id", _uuid),
    ("user_id", lambda r: str(r.randint(1, 10 ** 6))), ("name", lambda r: r.choice(NAMES)),
    ("path", lambda r: r.choice(["/docs/guide.md", "reports/2024/q1.pdf", "images/logo.png", "C:\\Temp\\out.txt"])),
    ("file", lambda r: r.choice(FILENAMES)), ("url", lambda r: r.choice(REFERERS)),
    ("callback", lambda r: "jQuery3510_" + str(r.randint(10 ** 9, 10 ** 10))),
    ("token", lambda r: base64.urlsafe_b64encode(r.randbytes(24)).decode()),
    ("cursor", lambda r: base64.b64encode(("{\"id\":%d}" % r.randint(1, 999)).encode()).decode()),
    ("price_min", lambda r: "%.2f" % (r.random() * 100)), ("lat", lambda r: "52.5200"), ("lng", lambda r: "-13.4050"),
    ("format", lambda r: r.choice(["json", "csv", "xml"])), ("expand", lambda r: "true"),
    ("query", lambda r: r.choice(["status:open label:bug", "author:o'brien is:pr", "size>100 AND color:red"])),
    ("time", lambda r: r.choice(["10:30", "noon", "now"])), ("type", lambda r: r.choice(["file", "dir", "link"])),
    ("cmd", lambda r: r.choice(["refresh", "export", "status"])), ("select", lambda r: r.choice(["all", "none", "id,name"])),
]


def _path_id(r):
    return r.choice([str(r.randint(1, 99999)), _uuid(r), "me", "o-brien", "acme-corp"])


PATHS = [
    lambda r: f"/api/v1/users/{_path_id(r)}", lambda r: f"/api/v2/orders/{_uuid(r)}/items",
    lambda r: "/search", lambda r: f"/products/{r.choice(['red-shoes', 'union-jack-flag', 'select-tea', 'drop-earrings'])}",
    lambda r: f"/static/js/app.{r.getrandbits(32):08x}.js", lambda r: "/.well-known/openid-configuration",
    lambda r: "/health", lambda r: "/v1/sys/health", lambda r: f"/docs/{r.choice(['getting-started', 'api/auth', 'faq'])}",
    lambda r: "/images/logo@2x.png", lambda r: "/feed.xml", lambda r: f"/blog/2024/05/{r.choice(['hello-world', 'or-not', 'select-and-drop'])}",
    lambda r: f"/api/files/{r.choice(['report-2024.pdf', 'Q1%20summary.xlsx', 'notes%2Ftodo.txt'])}",
    lambda r: "/robots.txt", lambda r: "/favicon.ico", lambda r: f"/api/v1/repos/acme/{r.choice(['web', 'api', 'cli'])}/pulls",
    lambda r: f"/users/{r.choice(['alice', 'o%27brien', 'j.doe'])}/profile", lambda r: "/v1/chat/completions",
    lambda r: "/graphql", lambda r: f"/api/v1/tenants/{_path_id(r)}/settings", lambda r: "/webhooks/stripe",
    lambda r: f"/download/{r.choice(['setup-1.2.3.exe', 'app-2.0.dmg', 'data.tar.gz'])}",
    lambda r: "/api/v1/search/suggest", lambda r: f"/wiki/{r.choice(['C%2B%2B', 'Rock_%27n%27_roll', 'Union_(set_theory)'])}",
]


def _user(r):
    return {"name": r.choice(NAMES), "email": r.choice(EMAILS), "username": r.choice(USERNAMES),
            "bio": r.choice(PROSE), "website": r.choice(REFERERS), "birthday": _date(r),
            "address": {"line1": r.choice(["12 O'Connell St.", "1600 Amphitheatre Pkwy", "221B Baker Street",
                                           "Unit 5; 3rd floor", "Rue de l'Église 4"]),
                        "city": r.choice(["Dublin", "Paris", "Zürich", "São Paulo", "Union City"]),
                        "zip": r.choice(["D02 X285", "75001", "8001", "94043"])},
            "tags": r.sample(["vip", "beta", "newsletter", "b2b", "o'reilly-fan"], 2)}


def _order(r):
    return {"customer_id": _uuid(r), "currency": "EUR", "note": r.choice(PROSE + SEARCHES),
            "items": [{"sku": f"SKU-{r.randint(100, 999)}", "qty": r.randint(1, 5), "price": round(r.random() * 100, 2),
                       "name": r.choice(["Select Tea (20 bags)", "Drop earrings", "Union Jack mug", "1 or 2 person tent"])}
                      for _ in range(r.randint(1, 4))],
            "shipping": {"method": r.choice(["standard", "express"]), "instructions": r.choice(PROSE)},
            "coupon": r.choice(["SPRING-24", None, "VIP10"]), "created_at": _ts(r)}


def _chat(r):
    return {"model": r.choice(["gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-pro"]), "temperature": 0.2,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": r.choice(PROSE + MARKDOWN + CODE)}], "stream": r.random() < 0.5}


def _comment(r):
    return {"post_id": r.randint(1, 10 ** 5), "author": r.choice(NAMES), "body": r.choice(PROSE + MARKDOWN),
            "format": r.choice(["markdown", "plain", "html"]), "reply_to": r.choice([None, _uuid(r)])}


def _snippet(r):
    return {"title": r.choice(["helper", "fix for #42", "example: parse dates", "O'Reilly sample"]),
            "language": r.choice(["python", "javascript", "go", "java", "rust", "css", "html"]),
            "code": r.choice(CODE), "public": r.random() < 0.5, "created": _ts(r)}


def _ticket(r):
    return {"subject": r.choice(["Can't log in", "Order not received", "Select menu broken", "Drop shipping question"]),
            "description": r.choice(PROSE) + "\n\n" + r.choice(MARKDOWN), "priority": r.choice(["low", "high"]),
            "attachments": [{"name": r.choice(FILENAMES), "url": "https://files.example.com/" + _uuid(r)}],
            "customer": {"name": r.choice(NAMES), "email": r.choice(EMAILS)}}


def _event(r):
    return {"event": r.choice(["page_view", "click", "purchase", "signup"]), "ts": _ts(r), "session": _uuid(r),
            "props": {"path": r.choice(["/", "/cart", "/search?q=union+station"]), "referrer": r.choice(REFERERS),
                      "screen": "1920x1080", "title": r.choice(["Home | Shop", "Search results: \"select tea\""])}}


def _config(r):
    return {"name": r.choice(WORDS), "schedule": r.choice(["0 2 * * *", "*/5 * * * *", "@daily"]),
            "output_dir": r.choice(["/var/data/exports", "s3://bucket/exports/2024/", "C:\\exports\\daily"]),
            "webhook": "https://hooks.example.com/services/T000/B000/XXXX", "retries": 3,
            "env": {"LOG_LEVEL": "info", "REGION": "eu-west-1"}, "description": r.choice(PROSE)}


def _graphql(r):
    return {"query": r.choice(["query { user(id: 1) { name email orders(first: 5) { id total } } }",
                               "mutation Update($id: ID!, $name: String) { updateUser(id: $id, name: $name) { id } }",
                               "{ search(term: \"union station\") { ... on Place { name } } }"]),
            "variables": {"id": str(r.randint(1, 99)), "name": r.choice(NAMES)}}


def _misc(r):
    return {"uuid": _uuid(r), "image": base64.b64encode(r.randbytes(48)).decode(), "ratio": "16:9",
            "range": r.choice(["1-10", "10..20", "a..z"]), "percent": "50%", "hash": "%032x" % r.getrandbits(128),
            "phone": r.choice(["+1 (555) 010-9999", "+49 30 1234567"]), "version": r.choice(["1.2.3", "v2.0.0-rc.1"]),
            "html": r.choice(CODE[-6:]), "emoji": "👍🏽", "nested": {"a": {"b": {"c": [1, 2, {"d": "deep"}]}}}}


JSON_BODIES = [_user, _order, _chat, _comment, _snippet, _ticket, _event, _config, _graphql, _misc]


def _login(r):
    return [("username", r.choice(USERNAMES + EMAILS)), ("password", r.choice(["hunter2", "P@ss'w0rd!", "correct horse battery staple", "x&y=z;1"])),
            ("remember", "on")]


def _contact(r):
    return [("name", r.choice(NAMES)), ("email", r.choice(EMAILS)), ("subject", r.choice(SEARCHES)),
            ("message", r.choice(PROSE + MARKDOWN))]


def _oauth(r):
    return [("grant_type", "authorization_code"), ("code", base64.urlsafe_b64encode(r.randbytes(18)).decode()),
            ("redirect_uri", "https://app.example.com/callback"), ("client_id", "web-" + str(r.randint(1, 9)))]


def _search_form(r):
    return [("q", r.choice(SEARCHES)), ("category", r.choice(["all", "books", "music & movies"])),
            ("min_price", "10"), ("max_price", "100")]


FORMS = [_login, _contact, _oauth, _search_form, _contact]
