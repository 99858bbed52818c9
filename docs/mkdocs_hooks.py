"""mkdocs hook for pages written on other branches (WRITTEN_ELSEWHERE): the nav in
mkdocs.yml and the pages link to them, and where one is not in this checkout yet, the build
leaves it out of the nav and turns links to it into plain text, with an info line, instead
of failing the strict build. A missing page of any other name is still an error."""
import logging
import os
import re

WRITTEN_ELSEWHERE = ("benchmarks.md", "estimators.md", "errors.md", "scaling.md")

log = logging.getLogger("mkdocs.hooks.nnback")
_absent = set()


def on_config(config):
    _absent.clear()
    _absent.update(page for page in WRITTEN_ELSEWHERE
                   if not os.path.exists(os.path.join(config["docs_dir"], page)))
    config["nav"] = _present(config["nav"])
    return config


def _present(nav):
    kept = []
    for entry in nav:
        (title, target), = entry.items() if isinstance(entry, dict) else ((None, entry),)
        if isinstance(target, list):
            entry = {title: _present(target)}
        elif target in _absent:
            log.info("nav: %s (%s) is not in this checkout yet; left out", target, title)
            continue
        kept.append(entry)
    return kept


def on_page_markdown(markdown, page, **kwargs):
    if not _absent:
        return markdown
    pattern = r"\[([^\]]+)\]\((%s)(#[^)]*)?\)" % "|".join(map(re.escape, sorted(_absent)))

    def unlink(match):
        log.info("%s: link to %s (not in this checkout yet) shown as text",
                 page.file.src_uri, match.group(2))
        return match.group(1)

    return re.sub(pattern, unlink, markdown)
