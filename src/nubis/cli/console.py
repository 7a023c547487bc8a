"""``nubis console``: open the web console in a browser, already logged in with the CLI's token."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client


def console(
    print_only: Annotated[bool, typer.Option("--print", help="print the link, open no browser")] = False,
) -> None:
    """Open the console (a one-time login link, valid for 60 s, made from the CLI's token)."""
    with Client() as client:
        link = client.console.link()
        url = client.url + link.path
    if print_only or not webbrowser.open(url):
        render.line("open this link once, within 60 s: ", url)
        return
    render.success(f"opened the console at {client.url}/ in your browser")
