"""A person looks at one invoice: terminal text or HTML, read from the gold tables without Spark."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.common.config import Config

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class InvoiceDocument:
    header: dict
    lines: list[dict]


def load_invoice(conf: Config, invoice_id: str) -> InvoiceDocument:
    """Reads with the `deltalake` package, as analysts do: no JVM needed to look at a bill."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    def rows(table: str) -> list[dict]:
        dataset = DeltaTable(conf.table_path("gold", table)).to_pyarrow_dataset()
        return dataset.to_table(filter=pc.field("invoice_id") == invoice_id).to_pylist()

    headers = rows("invoices")
    if not headers:
        raise LookupError(f"no invoice {invoice_id} in gold/invoices")
    return InvoiceDocument(headers[0], sorted(rows("invoice_lines"), key=lambda line: line["line_no"]))


def _money(amount, currency: str) -> str:
    from jobs.invoicing import round_minor_value

    return f"{round_minor_value(amount, currency):,}"


def _quantity(line: dict) -> str:
    value = line["quantity"].normalize()
    return f"{value:,f} {line['unit']}" if line["unit"] else f"{value:,f}"


def render_text(doc: InvoiceDocument) -> str:
    from tabulate import tabulate

    h, cur = doc.header, doc.header["currency"]
    rows = [(line["line_no"], line["line_type"], line["description"], _quantity(line), _money(line["amount"], cur))
            for line in doc.lines]
    body = tabulate(rows, headers=["#", "type", "description", "quantity", f"amount {cur}"], tablefmt="simple",
                    colalign=("right", "left", "left", "right", "right"), disable_numparse=True)
    return "\n".join([
        f"Invoice {h['invoice_id']}   account {h['account_id']}   issued {h['issued_at']:%Y-%m-%d %H:%M} UTC",
        f"Period {h['period_start']} to {h['period_end']} (end exclusive)   tax region {h['tax_region']}",
        "", body, "",
        f"{'Subtotal':>60} {_money(h['subtotal'], cur):>14} {cur}",
        f"{'Tax':>60} {_money(h['tax_total'], cur):>14} {cur}",
        f"{'Total':>60} {_money(h['total'], cur):>14} {cur}",
    ])


def render_html(doc: InvoiceDocument) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    cur = doc.header["currency"]
    return env.get_template("invoice.html.j2").render(
        header=doc.header, lines=[{**line, "amount_text": _money(line["amount"], cur), "quantity_text": _quantity(line)}
                                  for line in doc.lines],
        subtotal=_money(doc.header["subtotal"], cur), tax_total=_money(doc.header["tax_total"], cur),
        total=_money(doc.header["total"], cur))
