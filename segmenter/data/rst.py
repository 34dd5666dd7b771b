"""Sectioned prose from reStructuredText (Sphinx) sources: each file a document, each section
a segment of its prose sentences.

Real documents whose authors marked where one topic ends: CPython's documentation, for one,
is 233 long sectioned pages (``make python-docs`` fetches its sources from Debian's
``python3.11-doc``; ``data=python_docs``). docutils parses the markup; Sphinx's own directives
(``.. function::``, ``.. note::``, ...) are read as plain containers of prose, its roles
(``:func:`open```) as their text, and code, tables and indices are left out.

What is left out or moved is counted in the log, never silently: a sentence is kept when it
has ``min_words`` words and is mostly letters (code fragments and ``Changed in version 3.8.``
are not), a section with fewer than ``min_sentences`` sentences is joined to the one before it
(a heading over one line of prose is no topic), and a file with fewer than ``min_segments``
sections left (an index page) is no document.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from segmenter.core.document import BOUNDARY, Document, segments_to_document
from segmenter.data.corpora import FileCorpus
from segmenter.data.formats import list_files, read_text

log = logging.getLogger(__name__)

_ROLE = re.compile(r":(?:[\w.+-]+:)+`([^`]*)`")  # :func:`open`, :py:meth:`~x.y <target>`
_DIRECTIVE = re.compile(r"^\s*\.\. ([\w:.+-]+)::", re.MULTILINE)
# Directives whose body is no prose of the section: code, tables, indices, figures, metadata.
_NOT_PROSE = frozenset(
    {
        "code",
        "code-block",
        "sourcecode",
        "highlight",
        "literalinclude",
        "doctest",
        "testcode",
        "testoutput",
        "testsetup",
        "testcleanup",
        "productionlist",
        "toctree",
        "index",
        "raw",
        "include",
        "only",
        "table",
        "csv-table",
        "list-table",
        "tabularcolumns",
        "image",
        "figure",
        "math",
        "glossary",
        "hlist",
        "rubric",
        "moduleauthor",
        "sectionauthor",
        "module",
        "currentmodule",
        "program",
        "audit-event",
        "audit-event-table",
        "impl-detail",
        "availability",
        "seealso",
        "limited-api-list",
        "centered",
        "manpage",
        "compound",
    }
)
# Directives whose argument, after its first line (the version), is prose.
_VERSION_NOTES = frozenset({"versionadded", "versionchanged", "deprecated", "deprecated-removed"})


def _role_text(m: re.Match) -> str:
    text = re.sub(r"\s*<[^>]*>$", "", m.group(1))  # `title <target>` -> title
    return text.lstrip("~!")


def _prose_directive():
    """A docutils directive that reads any Sphinx directive's body as ordinary content, or
    drops it (``_NOT_PROSE``)."""
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives

    class AnyOption(dict):
        def __contains__(self, key):
            return True

        def __getitem__(self, key):
            return directives.unchanged

    class Prose(Directive):
        has_content = True
        optional_arguments = 1  # all on one: a signature `.. function:: open(file, mode='r')`
        final_argument_whitespace = True
        option_spec = AnyOption()

        def run(self):
            if self.name in _NOT_PROSE:
                return []
            node = nodes.container()
            if self.name in _VERSION_NOTES and self.arguments:
                # `.. versionchanged:: 3.6` then its text, which docutils reads as the argument
                if note := " ".join(self.arguments[0].split("\n", 1)[1:]).strip():
                    node += nodes.paragraph(text=note)
            self.state.nested_parse(self.content, self.content_offset, node)
            return [node]

    return Prose


def rst_sections(text: str, *, source: str = "<text>") -> list[tuple[int, str, list[str]]]:
    """(level, title, paragraphs) of every section in document order (level 1 = the page
    title); a section's paragraphs are its own, not its subsections'. Prose only."""
    import docutils.frontend
    import docutils.parsers.rst
    import docutils.utils
    from docutils import nodes
    from docutils.parsers.rst import directives

    text = _ROLE.sub(_role_text, text)
    prose = _prose_directive()
    for name in set(_DIRECTIVE.findall(text)):
        # Every directive met is read by Prose: Sphinx's are unknown to docutils, and docutils'
        # own prose ones (note, warning, topic, ...) hold paragraphs the same way. docutils
        # keeps one registry per process, so this holds for the whole process.
        directives.register_directive(name, prose)
    settings = docutils.frontend.get_default_settings(docutils.parsers.rst.Parser)
    settings.report_level, settings.halt_level = 5, 5  # markup problems never stop a read ...
    settings.warning_stream, settings.file_insertion_enabled = False, False  # ... nor print or read other files
    doc = docutils.utils.new_document(source, settings)
    docutils.parsers.rst.Parser().parse(text, doc)

    skip = (
        nodes.section,
        nodes.title,
        nodes.literal_block,
        nodes.doctest_block,
        nodes.table,
        nodes.system_message,
        nodes.comment,
        nodes.target,
        nodes.substitution_definition,
        nodes.raw,
    )

    def paragraphs(node, out: list[str]) -> list[str]:
        for child in node.children:
            if isinstance(child, nodes.paragraph):
                if para := " ".join(child.astext().split()):
                    out.append(para)
            elif isinstance(child, nodes.Element) and not isinstance(child, skip):
                paragraphs(child, out)
        return out

    sections: list[tuple[int, str, list[str]]] = []

    def walk(node, level: int) -> None:
        for child in node.children:
            if isinstance(child, nodes.section):
                title = child.next_node(nodes.title)
                sections.append((level, " ".join(title.astext().split()) if title else "", paragraphs(child, [])))
                walk(child, level + 1)

    walk(doc, 1)
    return sections


class RstCorpus(FileCorpus):
    """reStructuredText files (``pattern``, recursively under ``path``), one document each,
    one segment per section (see the module's docstring for what is left out). ``exclude``:
    glob patterns of paths (relative to ``path``) to leave out, e.g. ``whatsnew/*``."""

    task = BOUNDARY
    label_names = ("inside", "boundary")

    def __init__(
        self,
        *,
        path: str | Sequence[str] | None = None,
        files: dict[str, str | Sequence[str]] | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        pattern: str = "*.rst*",
        exclude: Sequence[str] = (),
        min_words: int = 3,
        min_sentences: int = 2,
        min_segments: int = 3,
    ) -> None:
        super().__init__(path=path, files=files, fractions=fractions, seed=seed)
        if min_words < 1 or min_sentences < 1 or min_segments < 1:
            raise ValueError(
                f"min_words={min_words}, min_sentences={min_sentences} and min_segments={min_segments} must be >= 1"
            )
        self.pattern, self.exclude = pattern, tuple(exclude)
        self.min_words, self.min_sentences, self.min_segments = min_words, min_sentences, min_segments

    def _files(self, paths) -> list[tuple[Path, str]]:
        """(file, document id) pairs: ids relative to ``path`` when it is one folder (as
        separator-format files get them), else file names; ``exclude`` applied to the ids."""
        root = Path(paths) if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir() else None
        out = []
        for f in list_files(paths, pattern=self.pattern):
            doc_id = f.relative_to(root).as_posix() if root else f.name
            if not any(fnmatch.fnmatch(doc_id, x) for x in self.exclude):
                out.append((f, doc_id))
        return out

    def _sentences(self, paragraphs: list[str], splitter, counts: Counter) -> list[str]:
        out = []
        for para in paragraphs:
            for s in (s.strip() for s in splitter.segment(para)):
                letters = sum(c.isalpha() for c in s)
                if len(s.split()) >= self.min_words and letters > 0.6 * len(s.replace(" ", "")):
                    out.append(s)
                elif s:
                    counts["fragments left out (too few words, or mostly code and symbols)"] += 1
        return out

    def read(self, paths) -> list[Document]:
        import pysbd

        splitter = pysbd.Segmenter(language="en", clean=False)
        docs, counts = [], Counter()
        for f, doc_id in self._files(paths):
            text = read_text(f)  # ReaderError naming the file and line of bad bytes
            segments: list[list[str]] = []
            for _level, _title, paragraphs in rst_sections(text, source=str(f)):
                sentences = self._sentences(paragraphs, splitter, counts)
                if segments and len(sentences) < self.min_sentences:
                    segments[-1].extend(sentences)  # too short to be a topic of its own
                    counts["short sections joined to the one before"] += bool(sentences)
                elif sentences:
                    segments.append(sentences)
            if len(segments) < self.min_segments:
                counts[f"files with fewer than {self.min_segments} sections of prose, not documents"] += 1
                continue
            docs.append(segments_to_document(doc_id, segments, {"source": str(f)}))
        for what, n in sorted(counts.items()):
            log.info("%s: %d %s", paths, n, what)
        return docs
