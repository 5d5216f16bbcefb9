"""The reports as files and as mail: CSV (for the provincial report forms) and HTML with charts.

Charts are drawn by matplotlib (Debian's python3-matplotlib, installed by govmail/services/reports.py),
as PNG images inside the HTML, so the page reads the same in a browser and as a mail attachment.
Every value is escaped for where it lands (the page is an autoescaping Jinja2 template, report.html.j2,
rendered with Debian's python3-jinja2; CSV cells that a spreadsheet would take for a formula are
quoted). Standard library otherwise.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
import os

import jinja2

from . import mail as hostmail

# Refusal reasons, in the order reports show them (govmail/host/report.py counts them).
REASONS = ("spam", "virus", "program", "size", "quota", "forwarding", "authentication", "sender",
           "sending_limit", "unknown_recipient", "relay", "other")
TITLES = {"monthly": ("Báo cáo vận hành tháng", "monthly operations report"),
          "annual": ("Báo cáo tình hình sử dụng năm", "annual usage report")}
REASON_NAMES = {"spam": "thư rác / spam", "virus": "virus", "program": "tệp chương trình / program",
                "size": "quá kích thước / size", "quota": "hộp thư đầy / quota", "forwarding": "chuyển tiếp / forwarding rule",
                "authentication": "đăng nhập sai / authentication", "sender": "người gửi / sender",
                "sending_limit": "giới hạn gửi / sending limit", "unknown_recipient": "không có người nhận / unknown recipient",
                "relay": "mượn máy chủ gửi đi nơi khác / relay attempt",
                "other": "khác / other"}


# The refusals that say a mailbox of the province was used against the rules (BN Art. 13, operator
# duty 3: report misuse and spam, and propose measures), gravest first, each with the measure the
# report proposes.
MEASURES = {
    "virus": "quét virus máy của người dùng, đổi mật khẩu / scan the user's computer, change the password",
    "spam": "kiểm tra máy và mật khẩu (có thể bị chiếm quyền); tái diễn thì tạm khóa hộp thư / check the computer "
            "and password (it may be taken over); if it recurs, suspend the mailbox",
    "sending_limit": "đặt lại mật khẩu, xem thư đã gửi; gửi hàng loạt hợp lệ thì dùng danh sách / reset the "
                     "password, review the sent mail; a legitimate mass mailing goes through a list",
    "program": "nhắc người dùng: không gửi tệp chương trình qua thư / remind the user: no programs by mail",
    "sender": "nhắc người dùng chỉ gửi bằng địa chỉ của mình; nếu được ủy quyền thì khai báo trong dữ liệu / "
              "remind the user to send as their own address; if they act for another, delegate it in the data",
    "forwarding": "gỡ quy tắc chuyển tiếp ra ngoài hệ thống công vụ, nhắc quy định / remove the forward out of "
                  "the state mail system, remind the user of the rule",
}
MISUSE_REASONS = tuple(MEASURES)


def measure(counts: dict) -> str:
    """The measures proposed for a mailbox's refusals, the gravest reason's first."""
    return "; ".join(MEASURES[r] for r in MISUSE_REASONS if counts.get(r))


def cell(v) -> str:
    s = str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def csv_rows(f: dict) -> list[list]:
    if f["kind"] == "annual":
        rows = [["Cơ quan / agency", "Hộp thư / mailboxes", "Có sử dụng / active", "Không sử dụng / inactive",
                 "Thư gửi / sent", "Thư nhận / received", "Dung lượng dùng MiB / quota used", "Dung lượng cấp MiB / quota"]]
        rows += [[a["agency"], a["mailboxes"], a["active"], a["inactive"], a["sent"], a["received"],
                  a["quota_used_mib"], a["quota_mib"]] for a in f["agencies"]]
        return rows
    rows = [["section", "item", "value"]]
    rows += [["mail", k, v] for k, v in f["mail"].items()]
    rows += [["refused", r, f["refusals"][r]] for r in REASONS]
    rows += [["banned", jail, n] for jail, n in sorted(f["bans"].items())]
    if f.get("availability_source"):
        rows.append(["availability", "measured by", f["availability_source"]])
    for svc, s in f["services"].items():
        rows += [["service", f"{svc} {k}", v] for k, v in s.items()]
    rows += [["as users meet it", f"{svc} availability", v] for svc, v in f.get("probes", {}).items()]
    rows += [["backup", k, v if v is not None else ""] for k, v in f["backups"].items()]
    rows += [["storage", k, v] for k, v in f["storage"].items() if k != "over_80_percent"]
    rows += [["mailbox over 80%", a, p] for a, p in f["storage"]["over_80_percent"]]
    rows += [["misuse", c["account"], misuse_text(c)] for c in f.get("misuse", [])]
    return rows


def misuse_text(c: dict) -> str:
    return ", ".join(f"{r} {n}" for r, n in c["refusals"].items()) + f" → {c['measure']}"


def to_csv(f: dict) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for row in csv_rows(f):
        w.writerow([cell(v) for v in row])
    return buf.getvalue().encode("utf-8-sig")  # the BOM: spreadsheets then read the Vietnamese right


def charts(f: dict) -> list[tuple[str, bytes]]:
    """(title, PNG) of each chart; none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        # Agency names are data: a "$" in one must stay a dollar sign, not start TeX-like math.
        matplotlib.rcParams["text.parse_math"] = False
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []

    def png(fig) -> bytes:
        b = io.BytesIO()
        fig.tight_layout()
        fig.savefig(b, format="png", dpi=96)
        plt.close(fig)
        return b.getvalue()

    if f["kind"] == "monthly":
        fig, ax = plt.subplots(figsize=(8, 3.2))
        days = list(f["days"])
        for key, color in (("received", "#2f6db5"), ("sent", "#17703a"), ("refused", "#b3261e")):
            ax.plot([d[8:] for d in days], [f["days"][d][key] for d in days], marker="o", label=key, color=color)
        ax.set_title("Mail per day / thư mỗi ngày")
        ax.legend()
        out.append(("Thư mỗi ngày / mail per day", png(fig)))
        fig, ax = plt.subplots(figsize=(8, 3.2))
        ax.barh([REASON_NAMES[r] for r in REASONS][::-1], [f["refusals"][r] for r in REASONS][::-1], color="#b3261e")
        ax.set_title("Refused, by reason / thư bị từ chối theo lý do")
        out.append(("Thư bị từ chối / refusals", png(fig)))
        if f["services"]:
            fig, ax = plt.subplots(figsize=(8, 3.2))
            names = list(f["services"])
            ax.bar(names, [100 * f["services"][n]["availability"] for n in names], color="#2f6db5")
            ax.set_ylim(min(99.0, min(100 * f["services"][n]["availability"] for n in names) - 1), 100.05)
            ax.set_ylabel("%")
            ax.tick_params(axis="x", labelrotation=30)
            ax.set_title("Availability / thời gian hoạt động")
            out.append(("Thời gian hoạt động / availability", png(fig)))
    else:
        ag = f["agencies"]
        if ag:
            fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(ag) + 1)))
            names = [a["agency"][:40] for a in ag][::-1]
            ax.barh(names, [a["active"] for a in ag][::-1], color="#17703a", label="active / có sử dụng")
            ax.barh(names, [a["inactive"] for a in ag][::-1], left=[a["active"] for a in ag][::-1], color="#c9ced6",
                    label="inactive / không sử dụng")
            ax.legend()
            ax.set_title("Mailboxes per agency / hộp thư theo cơ quan")
            out.append(("Hộp thư theo cơ quan / mailboxes per agency", png(fig)))
            fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(ag) + 1)))
            ys = range(len(ag))
            ax.barh([y + 0.2 for y in ys], [a["sent"] for a in ag][::-1], height=0.4, color="#2f6db5", label="sent / gửi")
            ax.barh([y - 0.2 for y in ys], [a["received"] for a in ag][::-1], height=0.4, color="#9a5b00",
                    label="received / nhận")
            ax.set_yticks(list(ys), names)
            ax.legend()
            ax.set_title("Mail per agency / thư theo cơ quan")
            out.append(("Thư theo cơ quan / mail per agency", png(fig)))
    return out


def when(ts) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def to_html(f: dict) -> str:
    """The page (report.html.j2 beside this module, autoescaped by Debian's python3-jinja2)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(os.path.abspath(__file__))),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    vi, en = TITLES[f["kind"]]
    misuse = [(c, ", ".join(f"{REASON_NAMES[r]}: {n}" for r, n in c["refusals"].items())) for c in f.get("misuse", [])]
    return env.get_template("report.html.j2").render(
        f=f, vi=vi, en=en, since=when(f["since"]), until=when(f["until"]), generated=when(f["generated"]),
        refused=sum(f["refusals"].values()), bans=sum(f["bans"].values()), rows=csv_rows(f), misuse=misuse,
        charts=[(t, base64.b64encode(p).decode()) for t, p in charts(f)])


def write(f: dict, out_dir: str) -> list[str]:
    os.makedirs(out_dir, mode=0o750, exist_ok=True)
    base = os.path.join(out_dir, f"{f['kind']}-{f['period']}")
    paths = [base + ".csv", base + ".html", base + ".json"]
    for p, data in zip(paths, (to_csv(f), to_html(f).encode(), json.dumps(f, ensure_ascii=False).encode()), strict=True):
        tmp = p + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    return paths


def mail(f: dict, paths: list[str], settings: dict) -> None:
    """To the province's administrators, from the postmaster: a short summary, the CSV and the HTML."""
    vi, en = TITLES[f["kind"]]
    m, r = f["mail"], f["refusals"]
    lines = [f"{f['name']} — {f['host']} — {f['period']} ({f.get('articles') or ''})", "",
             f"Nhận / received: {m['received']}", f"Gửi / sent: {m['sent']}",
             f"Từ chối / refused: {sum(r.values())} (" + ", ".join(f"{k} {v}" for k, v in r.items() if v) + ")",
             f"Chặn / bans: {sum(f['bans'].values())}"]
    if f["kind"] == "monthly":
        cases = f.get("misuse", [])
        lines += ["", f"Sử dụng sai mục đích, phát tán thư rác / misuse and spam ({f.get('misuse_article') or ''}): "
                  + (str(len(cases)) if cases else "không có / none")]
        lines += [f"  {c['account']} ({c['agency']}): {misuse_text(c)}" for c in cases]
    lines += ["", "Chi tiết trong tệp đính kèm / details attached."]
    attachments = []
    for p in paths[:2]:
        with open(p, "rb") as fh:
            attachments.append((os.path.basename(p), "csv" if p.endswith(".csv") else "html", fh.read()))
    to = settings["recipients"]
    hostmail.send(hostmail.message(", ".join(to), f"[govmail] {vi} {f['period']} / {en}: {f['host']}",
                                   "\n".join(lines) + "\n", settings["sender"], attachments), settings["sender"], to)
