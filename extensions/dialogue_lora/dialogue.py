"""Text -> turns: the two text layouts, cleaning (encoding, mojibake, whitespace) and actions.

A *turn* is one thing said in the dialogue: `Turn(speaker, text, file, line)`, where `speaker` is None
for narration and stage directions (kept as context, never a target) and `text` is always one line.
A turn stream may contain `BREAK` (None) where one conversation ends and the next begins (a new
file, a Discord gap): context never crosses a break.

Layouts, detected per file from its first lines (`detect_layout`):

    lines  `Alice: Hi Bob!` / `Bob:Boo!`       speaker and text on one line; `Bob:` alone is an empty turn
    play   `ROMEO:` alone, then the speech      the speech runs to the next blank line or the next cue, and
                                                 its lines are joined with single spaces; a cue is a `NAME:`
                                                 in capitals or a name that opened a speech before (the
                                                 colons of `Hear me speak:` are text)
    screenplay  `JOE (V.O.)` alone in capitals  a film script: the cue's extensions go, the speech below
                after a blank line, the speech   it is read as a play's; transitions (`CUT TO:`) and page
                right below it                   marks (`(MORE)`, `CONTINUED:`) are left out

A speaker is a short name at the start of a line (letters, digits, spaces and . ' -, starting with a
letter or an ordinal like `2ND`, at most 5 words and 40 characters). Colons later in a line are text,
and so are the colons of `10:30` (a digit on both sides) and `http://` (followed by `//`).

The hot path (one `Name: text` line) is built for speed: precompiled regexes, an ASCII fast path (only
lines with non-ASCII characters go through ftfy), no per-line allocations beyond the turn itself.
"""
from __future__ import annotations

import codecs
import functools
import itertools
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from . import chatcopy, chatexports, subtitles, webpage
from .errors import UserError
from .fileio import is_utf16

LAYOUTS = ("auto", "lines", "play", "screenplay")
MAX_NAME_WORDS = 5
MAX_NAME_CHARS = 40
# How much of a file the layout is judged from; and how far past prose alone (a book's introduction) it looks.
DETECT_LINES = 4000
MAX_PROLOGUE_LINES = 200_000
# Bytes checked for NUL when deciding a file is binary.
BINARY_SNIFF = 8192


class Turn(NamedTuple):
    speaker: str | None  # None: narration / stage direction (context only)
    text: str  # one line, whitespace collapsed
    file: str = ""  # where it came from (file name, for the sample's "source")
    line: int = 0  # 1-based line (text), row (CSV) or message index (Discord)

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


BREAK = None  # in a turn stream: a conversation boundary (context is reset)


def as_context(turns: Iterable[Turn]) -> list[Turn]:
    """Turns said again before a branch, as narration (`Name: text`: read the same, never learnt twice)."""
    return [t._replace(speaker=None, text=f"{t.speaker}: {t.text}" if t.speaker else t.text) for t in turns]

# `Name:` at the start of a line. Group 1: the name; the rest of the line after the colon is the text.
# The name: a letter, then letters, digits, spaces, . ' - _ (checked for length and word count after); an
# ordinal may come first (`2ND CITIZEN`, `1st Lord`). Or a short code of digits and a letter (`2B`, `9S`).
# Group 2: a script's directions between the name and the colon (`Bob (angrily):`, `Bob [whispers]:`,
# `ROMEO (aside) (softly):`), which stay in the text as actions (--strip_actions removes them).
MAX_DIRECTION_CHARS = 120
# A name's letters after the first may carry combining marks, which Python's \w leaves out: the vowel
# signs of Indic scripts (`राम`, `தமிழ்`), Hebrew and Arabic points, accents typed as combining characters.
_MARKS = ("\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
          "\u0900-\u0dff\u0e31-\u0e4e\u0eb1-\u0ecd\u0f18-\u0fbc\u102b-\u103e\u1056-\u108d\u17b4-\u17d3"
          "\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\u3099\u309a\ufe20-\ufe2f")
_LETTERS = r"(?:[^\W_]|[%s])" % _MARKS
# emoji a chat name is decorated with (`Luna 🌙:`, `Mx. Chaos ✨:`), left out of the name
_EMOJI_CHARS = chatcopy.EMOJI_CHARS + "\uFE0F\u200D"  # with the selector and joiner that build emoji
# a run of emoji starts with one (a zero-width joiner alone belongs to its script: Sinhala's `ශ්‍රී`)
_EMOJI = re.compile(r"[ \t]*%s[ \t]*" % chatcopy.EMOJI_RUN)
# words a post's icon labels rather than names (`🚨 BREAKING 🚨:`, `⚠️ Warning ⚠️:`, `🚀 Features:`)
_ICON_LABELS = frozenset("breaking warning update updates news alert reminder announcement important info tip tips "
                         "psa note features feature status edit new todo done fixed bug bugs changelog".split())
_SPEAKER = re.compile(r"((?:[%s]+ ?)?(?:\d{1,2}(?:st|nd|rd|th|ST|ND|RD|TH)[ .]+)?[^\W\d_]%s*(?:[ .'\-_]+%s+)*[.']?(?: ?#\d{1,3})?(?: ?[%s]+)?)((?:[ \t]*(?:\([^()\n]{1,%d}\)|\[[^\[\]\n]{1,%d}\]))+)?[ \t]*[:\uff1a]"
                      % (_EMOJI_CHARS, _LETTERS, _LETTERS, _EMOJI_CHARS, MAX_DIRECTION_CHARS, MAX_DIRECTION_CHARS))
# A code name of digits and a letter (`2B`, `9S`), tried only for a line that starts with a digit.
_CODE_NAME = re.compile(r"(\d{1,2}[^\W\d_][^\W_]?)()[ \t]*[:\uff1a]")
# A heading with a colon (`ACT I: The Kitchen`, `Chapter 12: Home`, `Scene 2:`) is narration, not a speaker.
_NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
# a play's divisions in the languages its public-domain editions come in, and the ordinals that name them
# (`SCÈNE PREMIÈRE`, `ZWEITE SZENE`, `ACTO PRIMERO`, `ДЕЙСТВИЕ ПЕРВОЕ`)
_DIVISIONS = ("acte|scène|chapitre|tableau|akt|aufzug|auftritt|szene|kapitel|acto|escena|jornada|capítulo|atto|"
              "scena|capitolo|действие|явление|сцена|картина|глава")
_ORDINAL_WORDS = ("first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|premier|premi[eè]re|"
                  "deuxi[eè]me|seconde|troisi[eè]me|quatri[eè]me|cinqui[eè]me|sixi[eè]me|septi[eè]me|huiti[eè]me|"
                  "dernier|derni[eè]re|erste[rsn]?|zweite[rsn]?|"
                  "dritte[rsn]?|vierte[rsn]?|fünfte[rsn]?|sechste[rsn]?|siebente[rsn]?|siebte[rsn]?|achte[rsn]?|"
                  "neunte[rsn]?|zehnte[rsn]?|elfte[rsn]?|zwölfte[rsn]?|dreizehnte[rsn]?|vierzehnte[rsn]?|"
                  "fünfzehnte[rsn]?|letzte[rsn]?|"
                  "primer[oa]?|segund[oa]|tercer[oa]?|cuart[oa]|quint[oa]|sext[oa]|s[eé]ptim[oa]|octav[oa]|"
                  "noven[oa]|d[eé]cim[oa]|[uú]ltim[oa]|"
                  "prim[oa]|second[oa]|terz[oa]|quart[oa]|sest[oa]|settim[oa]|ottav[oa]|non[oa]|decim[oa]|"
                  "первое|второе|третье|четвертое|четвёртое|пятое|шестое|седьмое|восьмое|девятое|десятое|"
                  "первая|вторая|третья|четвертая|четвёртая|пятая|шестая|последнее|последняя|"
                  # French abbreviations: `ACTE Ier`, `SCÈNE 1re`, `SCÈNE 2e`
                  r"I(?:er|re)|\d{1,2}(?:er|re|e|[eè]me)")
_HEADING = re.compile(r"(?:act|scene|chapter|part|book|volume|canto|episode|%s)\.?[ ]+(?:[ivxlcdm]+|\d+|%s|%s)\.?"
                      r"|(?:%s)[ ]+(?:act|scene|chapter|part|book|%s)\.?"
                      % (_DIVISIONS, _NUMBER_WORDS, _ORDINAL_WORDS, _ORDINAL_WORDS, _DIVISIONS), re.IGNORECASE)
# A narration line that opens a new scene or chapter: a screenplay's slugline (`INT. KITCHEN - DAY`), a
# heading with its number and nothing after it but punctuation and a title (`SCENE II. A street.`, `ACT I`,
# `## Chapter 3: Home`; not `Act 3 of the show`), a transcript's `[Scene: Central Perk]`. The context
# starts afresh there (`_sections`).
_SECTION = re.compile(r"[\[(]?(?:#{1,6}[ \t]*)?(?:(?-i:(?:INT|EXT|INT\.?/EXT|EXT\.?/INT|I/E)[. ][ \t]*\S)"
                      r"|(?:act|scene|chapter|part|book|volume|canto|episode|" + _DIVISIONS + r")\.?[ ]+"
                      r"(?:(?-i:[IVXLCDM]{1,7})|\d{1,3}|" + _NUMBER_WORDS + "|" + _ORDINAL_WORDS + r")"
                      r"(?=$|[ \t]*(?:[.:;)\]\u2014\u2013-]|,[ \t]*(?:act|scene|part|chapter|\d)\b)"
                      r"|[ \t]+(?:et|y|e)[ \t]+(?:derni[eè]re|[uú]ltim[oa])\b)"  # `SCÈNE XIII et dernière`
                      # an ordinal first: capitalised, as a heading is (`last chapter.` wrapped in prose is not one)
                      r"|(?-i:(?=[A-ZÀ-ÖØ-ÞА-ЯЁ]))(?:" + _ORDINAL_WORDS + r")[ ]+(?:act|scene|chapter|part|book|"
                      + _DIVISIONS + r")(?=$|[ \t]*[.:;)\]\u2014\u2013-])"
                      # a number first, as German, French and Spanish editions write it: `2. Szene`, `III. Akt`,
                      # `2e acte`, `1re scène`
                      r"|(?:\d{1,2}|(?-i:[IVXL]{1,6}))(?:\.|e|er|re|[eè]me|[ºª])[ ]+(?:" + _DIVISIONS + r")"
                      r"(?=[ \t]*\.?[ \t]*$|,[ \t]*(?:\d|(?-i:[IVXL])))"
                      r"|(?:scene|setting)[ \t]*:|(?:prologue|epilogue)(?=$|[ \t]*[^\w\s]))", re.IGNORECASE)
# A novel's sentence with an early colon (`The answer came at once:`, `He said:`, `Bob whispered:`, `Later
# that night:`) is narration, not a speaker: names are capitalised words with particles and prepositions
# between (`Captain of the Guard`, `Old man with a cane`). A sentence starts with a capital and has several
# lower-case words, or a pronoun then a lower-case word, or a verb of speech, or says when. A name that
# starts in lower case (`the real slim shady`) is a chat handle: left alone.
_PARTICLES = frozenset("of the de del della di da la le du des van von der den zu y e al el bin ibn ben and a an "
                       "at on in to for with from by into near behind under over without".split())
_SUBJECTS = frozenset("he she it they we i you there this that then but and so when as if my our your her his "
                      "their".split())
_SPEECH_VERBS = frozenset(
    "said says asked asks replied replies whispered whispers shouted shouts answered answers read reads wrote writes "
    "spoke speaks decided cried yelled muttered added continued explained thought exclaimed murmured called "
    "screamed began announced declared insisted".split())
_WHEN_FIRST = frozenset("later meanwhile previously earlier suddenly finally afterwards eventually elsewhere "
                        "somewhere tonight today yesterday tomorrow".split())
_WHEN_LAST = frozenset("later earlier ago morning night evening afternoon day week year".split())
# A transcript's labels and a story's time words alone before a colon (`Scene: Monica's apartment`, `Note:
# ...`, `Meanwhile: the king slept.`): narration. `Narrator:` is a speaker, and so is `Time:` (the chorus of
# The Winter's Tale, in tinyshakespeare).
_NOT_NAMES = _WHEN_FIRST | frozenset("scene setting note notes location summary synopsis description transcript "
                                     "credits".split())
# A film script's own directions (`SUPER: NEVADA, 1987`, `INTERCUT`), with a colon or alone on a line.
_SCRIPT_DIRECTIONS = ("super", "intercut", "montage", "chyron", "insert")
# They, a roleplay's out-of-character remark (`OOC:`) and a forum's `Re:` are no one's words.
_NOT_NAMES |= frozenset(("ooc", "re", *_SCRIPT_DIRECTIONS))
# An e-mail's header lines, wherever a thread quotes one (`From: Jane Doe <jane@...>`, `Sent:`, `Subject:`).
_NOT_NAMES |= frozenset("from sent to cc bcc subject date reply-to von gesendet betreff envoyé objet".split())
# A header's fields (Project Gutenberg's `Title:`, `Author:`, `Language:`; a fan fiction's `Rating:`,
# `Pairing:`, `Disclaimer:`; a Fountain title page's `Credit:`, `Draft date:`): narration while no one
# else has spoken yet (`_sections`); after that they are speakers like any (an interview's `TRANSLATOR:`).
_HEADER_FIELDS = frozenset("title author authors language rating pairing pairings disclaimer warning warnings fandom "
                           "genre genres category categories tags status credit source contact copyright date "
                           "editor translator illustrator encoding".split())
# Notes by someone outside the dialogue, wherever they stand (`Transcriber's Note:`, a fan fiction's `A/N`).
_NOT_NAME_PHRASES = frozenset(("transcriber's note", "transcriber\u2019s note", "transcribers note", "editor's note",
                               "editor\u2019s note", "author's note", "author\u2019s note", "authors note",
                               "translator's note", "translator\u2019s note"))
_HEADER_PHRASES = frozenset(("release date", "posting date", "draft date", "last updated", "quote from", "saved on", "word count",
                               "character set encoding", "produced by", "original publication", "most recently updated",
                               "dramatis personae", "persons of the play", "cast of characters", "persons represented"))

# A Chinese novel's `小明说：“你来了。”`, `她回答：「…」`, `老师问道：“…”` (Xiaoming said: "..."): a sentence
# before the quote, narration as an English `Bob said: "Hi."` is. A pronoun before a verb of speech, two
# characters or more before one that ends no given name, or anything before a two-character one:
# `阿道：“…”`, `小问：“…”`, `王明道：“…”`, `佐藤正道：「…」` are names (道 and 应 end many)
_SAID = "说說问問答喊叫嚷吼骂罵"
_HAN_SAID = re.compile(
    f"[他她它我你您][{_SAID}道应應]"  # a pronoun and any verb of speech (他道)
    f"|[\u4e00-\u9fff]{{2,}}[{_SAID}]"
    "|[\u4e00-\u9fff]+(?:[说說问問答笑喊叫骂罵]道|回[答应應])")  # 说道 问道 笑道..., 回答 回应
_OPEN_QUOTES = "\"'\u201c\u2018\u300c\u300e"  # " ' “ ‘ 「 『
# A Japanese script's line with no colon, the speech in its brackets right after the name (`太郎「こんにちは」`,
# `男『もしもし』`, a direction between: `花子（小声で）「…」`), as fan fiction (SS) and visual novels write it,
# a sound or a direction after it too (`女「あ」ニコッ`, `女「えっ」（赤面）`), or two quotes (`男「おい」「聞け」`);
# not narration's `彼は「はい」と言った`, which goes on after the quote, nor `すると彼は「はい」` (a particle ends it)
_KAGI_NAME = "[^\\s「『」』（）()：:、。，,！？!?…]"
_KAGI_LINE = re.compile(
    f"({_KAGI_NAME}{{1,{MAX_NAME_CHARS}}}(?:[ \u3000]{_KAGI_NAME}{{1,{MAX_NAME_CHARS}}})?)"  # `如月 千早`
    f"((?:[ \t]*[（(][^（）()\n]{{1,{MAX_DIRECTION_CHARS}}}[）)])?)[ \t\u3000]*([「『].*[」』])"
    f"((?:[ \t]*[（(][^（）()\n]{{1,{MAX_DIRECTION_CHARS}}}[）)]|[\u30a1-\u30fa\u30fc\uff66-\uff9f！!？?…]{{1,8}})?)\\s*")
_KAGI_PAIRS = {"「": "」", "『": "』"}
# a clause's particle after a word in kanji or katakana (`彼は`, `フェイトが`, `僕らは`): なのは, まこと, もも,
# 高町なのは are names
_PARTICLE_AFTER_WORD = re.compile("[\u4e00-\u9fff\u30a0-\u30ff][\u3041-\u3096]?[はがをにへでともの]$")
# narration before a quote that the colon's rules let through: a chapter's heading (`第一章「始まり」`), a clause
# (`彼女は言った「…」`, `僕は小さく頷いた「…」`), an adverb or conjunction (`そして「…」`, `その夜「…」`, `然後「…」`),
# a Chinese novel's thinking, hearing or writing (`我心想「…」`, `她輕聲道「…」`, `牌子上寫著「…」`)
_KAGI_NOT_NAME = re.compile(
    "^(?:第[0-9０-９一二三四五六七八九十百千]+[章話话部幕節节回巻卷編编]|序章|終章|终章|最終[章話回]|プロローグ|エピローグ"
    "|幕間|番外編?)$"
    "|^(?:そして|それから|しかし|だから|でも|すると|突然|一言|はい|いいえ|ありがとう|然後|然后|於是|于是|接著|接着|忽然)$"
    "|^[そこあ]の(?:[\u4e00-\u9fff\u30a0-\u30ff]|とき|まま|うち|あと|ころ|$)"  # (このみ, このか are names)
    "|[\u4e00-\u9fff\u30a0-\u30ff][はがをにでへもと][\u4e00-\u9fff\u30a0-\u30ff]"
    # a verb's past: 言った, 頷いた, 読んだ, 答えた, 告げた, 見た (日向ひなた, かなた are names)
    "|[\u4e00-\u9fff](?:[\u3041-\u3096]*[っいんしきちえけげせてねべめれりじぎびみ])?[ただ]$"
    "|(?:たち|達|ども|ら|さん)[はがをにへでともの]$"  # 子供たちが, 女の子たちが, 先輩さんは
    "|(?:聲道|声道|心想|想道|聽見|听见|看見|看见|寫著|写着|寫道|写道)$")


def _kagi_speaker(line: str) -> str | None:
    """A `太郎「こんにちは」` line (stripped) as the same line with a colon (`太郎：「こんにちは」`), for the colon's
    rules to judge its name; None for any other line. Read so only in a file that writes its speech so
    (`_kagi_script`): in a novel, a line with a word before a quote is narration."""
    m = _KAGI_LINE.fullmatch(line)
    if m is None or _PARTICLE_AFTER_WORD.search(m.group(1)) or _KAGI_NOT_NAME.search(m.group(1)):
        return None
    name, direction, speech, after = m.groups()
    depth = 0  # the first bracket closes at the end: not two quotes with words between (`A「…」と B「…」`)
    for i, c in enumerate(speech):
        depth += (c == speech[0]) - (c == _KAGI_PAIRS[speech[0]])
        if depth == 0 and i < len(speech) - 1 and speech[i + 1] in _KAGI_PAIRS:
            continue  # `男「おい」「聞いてるのか」`: two quotes of one speaker, nothing between
        if depth == 0:
            if i < len(speech) - 1:
                return None
            direction = direction.strip().replace("（", "(").replace("）", ")")
            return f"{' '.join(name.split())}{direction}\uff1a{speech}{after.rstrip()}"
    return None


def _kagi_script(head: list[str]) -> bool:
    """Whether a text writes its speech as `名前「…」` lines with no colon (an SS or a visual novel's script):
    such lines are a tenth of its lines or more and their speakers recur (two of them twice each, or one
    three times), or they are half its lines or more (three at least: a short excerpt, each speaker once).
    A novel's one-off `第一章「…」`, `ある日の放課後「…」` among its prose make no cast."""
    said: Counter = Counter()
    lines = 0
    for raw in head:
        if not raw.strip():
            continue
        lines += 1
        if (turn := _kagi_turn(raw)) is not None:
            said[turn[1]] += 1
    recurring = [n for n in said.values() if n >= 2]
    cast = len(recurring) >= 2 or any(n >= 3 for n in recurring)
    spoken = sum(said.values())
    return (cast and 10 * spoken >= lines) or (spoken >= 3 and 2 * spoken >= lines)


def _kagi_turn(raw: str) -> tuple[str, str] | None:
    """(the line with a colon, its speaker) of a `名前「…」` line whose name the colon's rules take; None for
    any other line (a paragraph's indent, `　彼は…`, is narration's; so is `小明说「…」`, as with a colon)."""
    if raw[:1] == "\u3000" or ("「" not in raw and "『" not in raw):
        return None
    line = raw.strip()
    form = _kagi_speaker(line)
    if form is None or split_speaker(line) is not None:
        return None
    hit = split_speaker(form)
    return None if hit is None else (form, hit[0])


def _dekagi(raw: str) -> str:
    """A `名前「…」` line of such a script as `名前：「…」`; any other line as it is, narration's words unchanged."""
    turn = _kagi_turn(raw)
    if turn is None:
        return raw
    return f"{turn[0]}\n" if raw.endswith("\n") else turn[0]


def _sentence(name: str) -> bool:
    if name.istitle() or name.isupper():  # the common name (`Second Murderer`): only a time can be a sentence
        return name.split(" ", 1)[0].lower() in _WHEN_FIRST
    words = name.split()
    if not words[0][:1].isupper():
        return False
    rest = words[1:]
    lower = [w for w in rest if w[:1].islower() and w.lower() not in _PARTICLES]
    return (len(lower) >= 3 or (words[0].lower() in _SUBJECTS and rest[0][:1].islower())
            or any(w in _SPEECH_VERBS for w in rest) or words[0].lower() in _WHEN_FIRST
            or (rest[-1][:1].islower() and rest[-1] in _WHEN_LAST))


# A chat export's date and time before each message (WhatsApp on Android and iPhone in the usual locales,
# Signal, IRC clients): `12/31/23, 9:15 PM - `, `31/12/23, 9:15 p. m. - `, `[31.12.23, 21:15:03] `,
# `31.12.2023 21.18 - `, `2024-01-05 12:01 `, `[12:01] `, `12:01 ` (the last only before an IRC `<nick>`).
_STAMP = re.compile(r"(\[)?(\d{1,4}[./-]\d{1,2}[./-]\d{1,4}(?:T|,?(?:\s+à)?\s+))?(\d{1,2}([:.])\d{2}(?:[:.]\d{2})?)"
                    r"(?:(?<=\d:\d\d:\d\d)[.,]\d{1,6})?(?:Z|(?<=\d)[+-]\d\d:?\d\d)?"  # ISO 8601's fraction and zone
                    r"(?:[\s\u00a0\u202f]?[AaPp]\.?[\s\u00a0\u202f]?[Mm]\.?)?(\])?(?:\s+-\s+|\s+)")
# WhatsApp Web's copied messages, time first: `[21:15, 31/12/2023] Alex: hey`, `[9:15 PM, 12/31/2023] ...`
_WEB_STAMP = re.compile(r"\[(\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:[\s\u00a0\u202f]?[AaPp]\.?[\s\u00a0\u202f]?[Mm]\.?)?),"
                        r"\s*\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\]\s+")
_STAMP_STARTS = frozenset("[0123456789")
# Whisper's timed lines: `[00:00:01.000 --> 00:00:03.500] [SPEAKER_00]: text` (the times go, as a subtitle's)
_WHISPER_TIMES = re.compile(r"\[(?:\d{1,2}:)?\d{1,2}:\d{2}[.,]\d{1,3} --> (?:\d{1,2}:)?\d{1,2}:\d{2}[.,]\d{1,3}\][ \t]*")
# HexChat's log writes the month and day before the time (`Nov 03 19:03:02 <bob>\thi`): left out, the time
# is an IRC log's stamp
_HEXCHAT_DAY = re.compile(r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d (?=\d{2}:\d{2}:\d{2} [<*-])")
# irssi pads a nick without a mode sign with a space: `< bob>`
_IRC_NICK = re.compile(r"<[ @+%~&]?([^<>\s:,]{1,40})>\s?(.*)")  # (no `:` `,`: they end or split names)
# the same without a time before it: a space after the nick, which an HTML tag (`<b>bold`) lacks
_BARE_NICK = re.compile(r"<[@+%~&]?([^<>\s/=:,]{1,40})>\s+(\S.*)")
_LOOSE_SENDER = re.compile(r"([^:\s][^:]{0,39}?):\s(.*)")
# Marks that chat apps put around names and before their own notices (direction marks and isolates).
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
# What a chat export writes in place of a message it did not keep: an empty turn.
_OMITTED = frozenset(s.casefold() for s in (
    "<Media omitted>", "image omitted", "video omitted", "audio omitted", "sticker omitted", "GIF omitted",
    "document omitted", "Contact card omitted", "This message was deleted", "You deleted this message",
    "Waiting for this message", "Waiting for this message. This may take a while", "Missed voice call",
    "Missed video call", "Missed group voice call", "Missed group video call", "null",
    # the deleted-message notice in the export languages most met (Android's `<...>` placeholders are caught
    # by their brackets, in any language: `<Medien ausgeschlossen>`, `<Multimedia omitido>`)
    "Diese Nachricht wurde gelöscht", "Du hast diese Nachricht gelöscht", "Se eliminó este mensaje",
    "Eliminaste este mensaje", "Ce message a été supprimé", "Vous avez supprimé ce message",
    "Questo messaggio è stato eliminato", "Hai eliminato questo messaggio", "Esta mensagem foi apagada",
    "Você apagou esta mensagem", "Dit bericht is verwijderd", "Je hebt dit bericht verwijderd",
    "Данное сообщение удалено", "Вы удалили данное сообщение",
    # missed calls, in the same languages
    "Verpasster Sprachanruf", "Verpasster Videoanruf", "Llamada perdida", "Videollamada perdida",
    "Llamada de voz perdida", "Appel vocal manqué", "Appel vidéo manqué", "Chiamata vocale persa",
    "Videochiamata persa", "Chamada de voz perdida", "Chamada de vídeo perdida", "Gemiste spraakoproep",
    "Gemiste video-oproep", "Пропущенный аудиозвонок", "Пропущенный видеозвонок"))
# `IMG-….jpg (file attached)`: an attachment's name, in the same languages
_ATTACHED = tuple(s.casefold() for s in ("(file attached)", "(Datei angehängt)", "(archivo adjunto)", "(fichier joint)",
                                         "(file allegato)", "(arquivo anexado)", "(bestand bijgevoegd)",
                                         "(файл добавлен)"))
# Android's `<...>` placeholder for media not exported, in the export's language (`<Medien ausgeschlossen>`,
# `<Multimedia omitido>`, `<Mídia oculta>`, `<Без медиафайлов>`): known by the word for media in it
_MEDIA_WORDS = ("medi", "mídia", "média", "медиа", "omitted")
_EDITED = "<This message was edited>"
_POLL = "POLL:"  # WhatsApp's poll, in an Android export


def _shape(stamp: re.Match) -> tuple:
    """How a stamp is laid out (brackets, the date's separator, a dash after it): one export writes one
    layout, so a line of another (`31.12.2023 18:00 dinner` pasted into a US export's message) is text."""
    if stamp.re is _WEB_STAMP:
        return ("web",)
    sep = re.search(r"[./-]", stamp.group(2)) if stamp.group(2) else None
    return bool(stamp.group(1)), sep.group(0) if sep else None, stamp.group(0).rstrip().endswith("-")


def _stamp(text: str) -> tuple[re.Match, bool] | None:
    """The date/time a chat export puts before a line, and whether it has a date; None when there is none."""
    if text[:1] == "[" and (web := _WEB_STAMP.match(text)) is not None:  # bracketed and dated
        return web, True
    m = _STAMP.match(text)
    if m is None or bool(m.group(1)) != bool(m.group(5)):  # a `[` must close
        return None
    dated = bool(m.group(2))
    if m.group(4) == "." and not dated:  # `21.18` alone is a number in a sentence
        return None
    return m, dated


# Zoom's saved meeting chat: `From  Sarah Chen`, `From Sarah Chen to Everyone`, `... to Bob(Direct Message)`
_ZOOM_SENDER = re.compile(r"From\s+(\S.*?)(?:\s+to\s+(?:Everyone|\S.*?)\s*(?:\((?:Direct Message|[Pp]rivately)\))?)?")
_BRACKET_NOTES = frozenset("edit edited update updated eta tl;dr tldr deleted removed source link note ps spoiler "
                           "spoilers tw cw a/n".split())
_LINK_TARGET = re.compile(r"#|\.{0,2}/|[\w.-]+/|[\w-]+\.[A-Za-z0-9]{1,5}$")  # `#top`, `./a`, `docs/x`, `LICENSE.md`
_BRACKET_COLON = re.compile(r"\[([^\[\]\n:]{1,%d})\][ \t]*[:\uff1a](.*)" % MAX_NAME_CHARS, re.DOTALL)
# A transcript's time after the speaker's name (`Speaker 2: [00:00:06] Thanks`, Descript's, Rev's): no one's words
_LEAD_TIME = re.compile(r"[\[(](?:\d{1,2}:\d{2}:\d{2}|\d{2}:\d{2})(?:[.,]\d{1,3})?[\])][ \t]*")  # not a verse, (3:16)
_OOC = re.compile(r"[(\[]\s*(?:ooc|out of character)\s*[)\]]", re.IGNORECASE)
_MARKDOWN_NAME = re.compile(r"(\*\*\*|\*\*|__|\*|_)([^*_:\n]{1,%d}?)(?::\1|\1:)(.*)" % MAX_NAME_CHARS)
# A scene break in a story or script (`***`, `* * *`, `---`, `###`, `~~~`): the context starts afresh after it.
_SCENE_BREAK = re.compile(r"(?:[*#~=_-][ ]?){3,}")
_LOG_SESSION = ("--- Log opened", "--- Log closed")  # irssi's
_IRC_CLIENT = re.compile(r"(?:-!-|\*{1,3}|-->|<--)[ \t]")  # an IRC client's own line after its time: joins, notices
_LOG_TAGS = re.compile(r"(?:\[[^\[\]\n]{1,60}\]:?[ \t]*)+(?=<)")  # a server log's thread and level before a `<nick>`
# The hot path's shortcut for ASCII lines: a one-word name, then the colon (not `://`, not `10:30`).
# Anything it does not take goes through `split_speaker`, which agrees with it (tested).
_FAST_SPEAKER = re.compile(r"([A-Za-z](?:[A-Za-z0-9_]{0,%d}[A-Za-z0-9])?):(?!//)(?!(?<=\d:)\d)(.*)" % (MAX_NAME_CHARS - 2))
# A speaker's colon comes early in the line, unless directions come first: a cheap test before the regex.
_COLON_WITHIN = MAX_NAME_CHARS + 16
# An undecodable byte read with errors="surrogateescape" becomes a lone surrogate U+DC80..U+DCFF.
_ESCAPED = re.compile("[\udc80-\udcff]")
# Actions: `(...)` (innermost first, so nested ones go too), `[...]`, and `*...*` where the stars hug
# a word (`*waves*`, `*looks away*`): not `2 * 3 * 4` (spaces inside) nor markdown `**bold**`. Starred
# words that do not start with a verb of action are emphasis, not an action (`_emphasis`).
_ACTION = re.compile(r"\s*(?:\([^()]*\)|\[[^\[\]]*\]|\uff08[^\uff08\uff09]*\uff09|(?<![\w*])\*(?![\s*])[^*\n]*?[^\s*]\*(?![\w*])|(?<![\w*])\*[^\s*]\*(?![\w*]))")
# Invisible characters that can precede a speaker's name (copied from web pages or chat clients).
# Zero-width characters, the word joiner, the BOM, the soft hyphen, and the direction marks and embeddings
# of right-to-left text (U+200E/F, U+061C, U+202A-E, U+2066-9).
_LEADING_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@dataclass
class ReadStats:
    """What reading and cleaning did, for the report."""

    lines: int = 0  # physical lines read
    replaced_bytes: int = 0  # undecodable bytes replaced by U+FFFD
    repaired_lines: int = 0  # lines changed by the mojibake repair (ftfy)
    layouts: dict | None = None  # file -> layout used
    encodings: dict | None = None  # file -> the legacy encoding it was read with (a file not in UTF-8)
    notes: list | None = None  # how a reader read a file, where it had to choose (for the report's notes)
    hints: list | None = None  # of the notes, those that may explain a character not found (said with the error)

    def __post_init__(self):
        if self.hints is None:
            self.hints = []
        if self.layouts is None:
            self.layouts = {}
        if self.encodings is None:
            self.encodings = {}
        if self.notes is None:
            self.notes = []

    def add_note(self, note: str, hint: bool = False) -> None:
        """A note for the report; a `hint` is said with the error too, should a character not be found."""
        self.notes.append(note)
        if hint:
            self.hints.append(note)


# ---------------------------------------------------------------------------------------------- cleaning


def _ftfy_fix(text: str) -> str:
    import ftfy  # lazily: only lines with non-ASCII characters need it

    # HTML entities stay as written: ftfy would unescape them only in lines it sees (non-ASCII ones),
    # so `Tom &amp; Jerry` would come out two ways; everything else it fixes is non-ASCII anyway.
    # Its width fix would also turn Chinese and Japanese full-width punctuation (`，`, `！`) into ASCII:
    # only full-width letters and digits are narrowed, and half-width katakana widened (_WIDTHS).
    # Curly quotes are straightened, but not in Chinese, Japanese or Korean, whose own quotes they are.
    cjk = _CJK_TEXT.search(text) is not None
    text = ftfy.fix_text(text, unescape_html=False, fix_character_width=False, uncurl_quotes=not cjk)
    if cjk and ("\u2019" in text or "\u2018" in text):  # an apostrophe in a Latin name (`O’Brien：“你好。”`)
        text = _LATIN_APOSTROPHE.sub("'", text)
    return _WIDTHS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text) if _WIDTHS.search(text) else text


_WIDTHS = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff65-\uff9f]+")
_LATIN_APOSTROPHE = re.compile("(?<=[A-Za-z\u00c0-\u024f])[\u2018\u2019](?=[A-Za-z\u00c0-\u024f])")
_CJK_TEXT = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")  # kana, Han, Hangul


# Control characters that are not white space: a crashed log's NUL padding, and a terminal's escape codes (ESC,
# BEL: a name `\x1b[2J` cleared the screen where the report or chat.py printed it). Never words.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def clean_text(text: str, stats: ReadStats | None = None) -> str:
    """One clean line: undecodable bytes -> U+FFFD (counted), mojibake repaired, whitespace collapsed.

    ASCII text (the common case) skips straight to the whitespace collapse.
    """
    if not text.isascii():
        # ftfy weighs the whole string: without the line ending, a file's last line (which may lack
        # one) is judged like the same line anywhere else
        text = text.strip().lstrip(_LEADING_INVISIBLE).lstrip()
        if not text:  # only non-ASCII whitespace (a no-break space) or invisible characters
            return ""
        if "\udc80" <= max(text) and _ESCAPED.search(text):
            text, n = _ESCAPED.subn("\ufffd", text)
            if stats is not None:
                stats.replaced_bytes += n
        fixed = _ftfy_fix(text)
        if fixed != text:
            if stats is not None:
                stats.repaired_lines += 1
            text = fixed
    return one_clean_line(text)


def one_clean_line(text: str) -> str:
    """White space collapsed and control characters out: clean_text's last step, and all that an ASCII line
    of the text reader needs."""
    text = " ".join(text.split())
    if not text.isprintable() and _CONTROL.search(text):  # (isprintable: C, where almost every line ends)
        text = " ".join(_CONTROL.sub("", text).split())  # no space left at an end or doubled where one was
    return text


def text_width(text: str) -> int:
    """Length in columns: a wide letter (Chinese, Japanese, Korean, fullwidth forms) counts two.

    Length thresholds were set on Latin text, where a word is five letters or so; a CJK character says
    as much as a few of them (`谢谢你帮我` is `thanks for helping me`), so counted as one, a chat in
    those scripts reads as short messages throughout.
    """
    if text.isascii():
        return len(text)
    # letters only: emoji are wide too, and a row of them is no longer a message for it
    return sum(2 if unicodedata.east_asian_width(c) in "WF" and unicodedata.category(c)[0] == "L" else 1
               for c in text)


def speaker_name(raw: str, stats: ReadStats | None = None, emoji: bool = True) -> str:
    """A name from a field (a Discord nickname, a CSV column) cleaned for use as a speaker: one line, and
    no `:` (it ends the cue: `Sam: the Brave:` would be read back as `Sam`) or `,` (`--name` splits there)."""
    text = undecorated(clean_text(raw, stats), emoji)
    if ":" in text or "," in text:
        text = " ".join(text.replace(":", " ").replace(",", " ").split())
    return text


def undecorated(name: str, emoji: bool = True) -> str:
    """A chat name without what decorates it: emoji (`Luna 🌙`, `🔥Blaze🔥`) and pronouns (`Dev (he/him)`),
    as `--name Luna` means it; a name of nothing else stays as it is."""
    if name.isascii() and "/" not in name:
        return name
    plain = _PRONOUN_PARENS.sub(" ", name)
    plain = " ".join((_EMOJI.sub(" ", plain) if emoji else plain).split())
    return plain if any(c.isalnum() for c in plain) else name


# Starred words: roleplay writes actions as a verb in the third person or -ing (`*waves*`, `*looks away*`,
# `*laughing*`) or as one of the common bare ones (`*sigh*`); chat writes emphasis the same way (`I *never*
# said that`, `*Never* again`), and dropping an emphasised word can turn a line's meaning round.
_BARE_ACTIONS = frozenset(
    "sigh gasp cough facepalm shrug hug wink blush yawn sniff grin nod laugh giggle smile cry sob groan pout gulp "
    "ahem hmph shudder blink bow wave clap snort chuckle smirk scream whistle sneeze hiccup purr growl headdesk "
    "gulps cringe frown glare stare squeal shiver wince sniffle kiss pat poke boop bonk pause laughter silence "
    "noises".split())
# words ending in s or -ing that are not verbs of action (`*this*`, `*always*`, `*Thanks*`, `*morning*`)
_NOT_ACTIONS = frozenset(
    "this is was yes his hers its ours yours theirs us always does has as less unless thus plus news perhaps "
    "series bus gas lens nevertheless regardless sometimes besides afterwards towards various serious famous "
    "obvious previous nervous jealous anxious curious precious ridiculous dangerous gorgeous delicious enormous "
    "glorious furious mysterious tremendous numerous generous anonymous fabulous thanks congrats "
    "nothing something anything everything morning evening wedding darling ceiling building meeting during "
    "thanksgiving amazing interesting boring exciting stunning shocking disgusting annoying terrifying "
    "frightening fascinating outstanding charming lightning pudding sibling".split())
# the word before a starred one that makes it part of the sentence (`This is *amazing*`, `Good *morning*`)
_LEAD_INS = frozenset(
    "a an the my your his her our their its this that these those is are was were be been am so very really "
    "too such good happy merry what how it".split())
# the word after a starred one that makes it the sentence's subject (`*Tickets* are sold out`)
_FOLLOW_VERBS = frozenset("is are was were has have had will would can could should must may might".split())
_PRONOUNS = frozenset("i you he she it we they that this there".split())
_NARRATORS = frozenset("i he she they we".split())  # who narrates a roleplay action


def _is_action_word(word: str) -> bool:
    w = word.lower().strip(".,!?;:'\"")
    if w in _BARE_ACTIONS:
        return True
    if w in _NOT_ACTIONS or not w.isalpha():
        return False
    if len(w) > 4 and w.endswith("ing"):  # a participle has a stem with a vowel: not `bring`, `string`
        return any(c in "aeiouy" for c in w[:-3])
    return len(w) > 3 and w.endswith("s") and not w.endswith("ss")


def _emphasis(m: re.Match, speaker: str | None = None) -> bool:
    """Whether an `_ACTION` match is part of the text, not an action. In brackets: numbers, links and faces
    (`(or 6)`, `[link](http://...)`, `(T_T)`). Starred words are an action when they start with a verb of
    action (`*waves*`, `_is_action_word`), or narrate one: the speaker or `she`/`he`/`they`/`I` and such a
    verb (`*She laughs softly.*`, `*Seraphina smiles*` said by Seraphina), or a bare one after a word
    (`*evil laugh*`). Even then they are emphasis when the sentence runs through them (`This is
    *amazing*`, `It *works* now`, `*Tickets* are sold out`, `*Rules*: no spoilers`, `*Sounds* good`)."""
    found = m.group(0).lstrip()
    inner = found[1:-1]
    if found[:1] != "*":
        after = m.string[m.end():m.end() + 1]
        core = inner.strip()
        if len(core) > 2 and core[0] == core[-1] == "_":  # in italics, as Project Gutenberg writes directions
            core = core[1:-1]
        face = " " not in core and any(not (c.isalnum() or c in ".'-") for c in core)
        return (face or not core[:1].isalpha() or any(c.isdigit() for c in inner) or "://" in inner
                or "www." in inner or (found[:1] == "[" and after == "("))
    words = inner.split()
    first = words[0].lower().strip(".,!?;:'\"")
    subject = len(words) >= 2 and (first in _NARRATORS or (speaker is not None
                                                          and first == speaker.split()[0].casefold()))
    if subject and (_is_action_word(words[1]) or words[1].lower().endswith("ed")):
        return False  # roleplay narrates its actions: `*She laughs softly.*`, `*he nodded*`
    if len(words) in (2, 3) and words[-1].lower().strip(".,!?") in _BARE_ACTIONS:
        return False  # `*evil laugh*`, `*long pause*`
    if not _is_action_word(words[0]):
        return True
    after = m.string[m.end():]
    if after[:1] == ":":
        return True
    before = m.string[:m.start() + len(m.group(0)) - len(found)].split()
    if before and before[-1].lower() in _LEAD_INS:
        return True
    following = after.split(None, 2)
    if len(words) == 1 and words[0][:1].isupper() and following and following[0][:1].islower():
        return True  # a capital verb the sentence goes on from: `*Sounds* good`, `*Works* for me`
    # a verb that goes on with the sentence, not a question after an action (`*laughs* are you serious?`)
    return (bool(following) and following[0] in _FOLLOW_VERBS
            and (len(following) < 2 or following[1].lower() not in _PRONOUNS))


def strip_actions(text: str, speaker: str | None = None) -> str:
    """Remove actions in `(...)`, `[...]` and `*...*` (and the space before them); collapse what is left.
    What is part of the text stays: starred emphasis (`I *never* said that`), `(or 6)` (`_emphasis`).
    `speaker`, whose line it is, lets `*Seraphina smiles*` in Seraphina's line count as an action."""
    if "(" not in text and "*" not in text and "[" not in text and "\uff08" not in text:
        return text
    while True:  # again while something went: `(laughs (a lot))` loses its inner, then its outer part
        stripped = _ACTION.sub(lambda m: m.group(0) if _emphasis(m, speaker) else "", text)
        if stripped == text:
            return " ".join(text.split())
        text = stripped


_DIRECTION_PARTS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_DIRECTION_ONLY = re.compile(r"(?:[ \t]*(?:\([^()]*\)|\[[^\[\]]*\]))+[ \t]*")
_EXTENSION = re.compile(r"V\.? ?O\.?|O\.? ?S\.?|O\.? ?C\.?|CONT(?:['\u2019]?D|INUED|INUING)\.?|PRE-?LAP", re.IGNORECASE)
_TIME_ONLY = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp]\.?[Mm]\.?)?")
_PRIVATE_MARKS = frozenset(("Direct Message", "privately", "Privately"))  # Zoom's mark of a direct message
# pronouns after a name (`Dev (he/him):`): who speaks, not how
_PRONOUN_WORDS = r"(?:he|him|his|she|her|hers|they|them|theirs|it|its|xe|xem|xir|ze|zir|hir|fae|faer|ey|em|any|all)"
_NAME_PRONOUNS = re.compile(r"%s(?:[ \t]?/[ \t]?%s){1,2}" % (_PRONOUN_WORDS, _PRONOUN_WORDS), re.IGNORECASE)
_PRONOUN_PARENS = re.compile(r"\([ \t]*(?:%s)[ \t]*\)" % _NAME_PRONOUNS.pattern, re.IGNORECASE)  # in a name


# Letters, digits, spaces and `.'_-` before the first colon, a letter first: no mark, direction or icon,
# so whether it is a name and which depends on these characters alone (cached: a script repeats them).
_PLAIN_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9 .'_\-]*")


@functools.lru_cache(maxsize=4096)
def _plain_speaker(prefix: str) -> str | None:
    hit = _split_speaker(prefix + ":")
    return hit[0] if hit is not None else None


def split_speaker(line: str) -> tuple[str, str] | None:
    """`(name, text)` when the line starts with a speaker's `Name:`, else None. Text is not cleaned.

    >>> split_speaker("Bob:Boo!")
    ('Bob', 'Boo!')
    >>> split_speaker("At 10:30 we left.") is None
    True
    """
    hit = _plain_split(line)
    return _split_speaker(line) if hit is False else hit


def _plain_split(line: str) -> tuple[str, str] | None | bool:
    """split_speaker's answer for a line with a plain prefix before its colon (from the cache); False for
    any other line."""
    colon = line.find(":", 0, _COLON_WITHIN)
    # (two spaces: the parser's slow route judges the name with them collapsed, `Editor's  note:` as a note)
    if colon <= 0 or _PLAIN_PREFIX.fullmatch(line, 0, colon) is None or "  " in line[:colon]:
        return False
    rest = line[colon + 1:]
    if rest and (rest[0] == "/" or rest[0].isdigit()):  # `http://`, `10:30`, `7:²`: the whole rule decides
        return False
    name = _plain_speaker(line[:colon])
    return None if name is None else (name, rest)


def _split_speaker(line: str) -> tuple[str, str] | None:
    if line[:2] == ">>":  # a TV caption's mark of a new speaker, a name in capitals: `>> ALICE: Fine.`
        hit = split_speaker(line[2:].lstrip())
        return hit if hit is not None and hit[0].isupper() else None  # `>> Bob: ...`: a quote in a message
    if line[:1] == "[" and (bracketed := _BRACKET_COLON.match(line)) is not None:  # whisperX's `[SPEAKER_00]: hi`
        label, rest = bracketed.group(1).strip(), bracketed.group(2)
        target = rest.strip()
        if (not label or label.split()[0].casefold() in _BRACKET_NOTES or "://" in target[:12]
                or (target and " " not in target and _LINK_TARGET.match(target))):
            return None  # a post's `[Edit 2]: ...`, a markdown link's `[guide]: docs/GUIDE.md`
        return split_speaker(f"{label}:{rest}")
    if line[:2] in ("- ", "* ", "\u2022 ") and (item := line[2:].lstrip())[:1] in "*_":
        # a list item's name in bold or italics (`- **Bob:** hi`, as a chat pasted into markdown has it); not a
        # list's `- Milk: 2 liters`, `- Age: 19`
        md = _MARKDOWN_NAME.match(item)
        if md is not None and md.group(2)[:1].isalpha() and md.group(2)[-1:] != " ":
            line = item
    if line[:1] in "*_":  # a name in markdown bold or italics: `**Bob:** hi`, `**Bob**: hi`, `*Bob:* hi`
        md = _MARKDOWN_NAME.match(line)
        if md is not None and md.group(2)[:1].isalpha() and md.group(2)[-1:] != " ":
            line = f"{md.group(2)}:{md.group(3)}"
    if (line.find(":", 0, _COLON_WITHIN) < 0 and line.find("(", 0, _COLON_WITHIN) < 0
            and line.find("[", 0, _COLON_WITHIN) < 0 and (line.isascii() or line.find("\uff1a", 0, _COLON_WITHIN) < 0)):
        return None
    m = _SPEAKER.match(line)
    if m is None and line[:1].isdigit():
        m = _CODE_NAME.match(line)
    if m is None:
        return None
    name, direction = m.group(1, 2)
    if not name[:1].isalnum() or not name[-1:].isalnum() and name[-1:] not in ".'":
        plain = " ".join(_EMOJI.sub(" ", name).split())
        icon = _EMOJI.match(name)  # None where the name starts with a selector or a joiner alone
        spaced_icon = icon is not None and icon.group().endswith((" ", "\t"))
        if icon is not None and (plain.casefold() in _ICON_LABELS or (spaced_icon and name[-1:].isalnum())):
            return None  # a post's label with its icon (`🚀 Features:`, `🚨 BREAKING 🚨:`), not a decorated name
        plain = plain.strip("\ufe0f\u200d ")  # a selector or joiner left alone before the name
        if not plain:
            return None
        name = plain
    end = m.end()
    rest = line[end:]
    if rest[:2] == "//" or (rest[:1].isdigit() and name[-1:].isdigit() and not direction):
        return None  # http://..., 10:30
    if len(name) > MAX_NAME_CHARS:
        return None
    name = _zoom_sender(name)
    if rest.lstrip()[:1] in _OPEN_QUOTES and rest.strip() and _HAN_SAID.fullmatch(name):
        return None
    if " " in name and (_HEADING.fullmatch(name) or _sentence(name) or name[-3:].lower() == " by"
                        or name.lower() in _NOT_NAME_PHRASES or _TRANSITION_NAME.fullmatch(name)):
        return None  # a heading, a sentence, a credit (`Written by: ...`, `Transcribed by: ...`), a note, `CUT TO:`
    if " " not in name and name.lower() in _NOT_NAMES:
        return None
    if " " in name:
        if name.count(" ") >= MAX_NAME_WORDS:
            parts = name.split()
            if len(parts) > MAX_NAME_WORDS:
                return None
            name = " ".join(parts)
        elif "  " in name:
            name = " ".join(name.split())
    if direction:
        if _OOC.search(direction):  # a roleplayer speaking for themselves (`Thorin (OOC): lol`): not the character
            return None
        # a time in brackets is a log's stamp, not a direction (`Bob (10:00): hi`)
        # nor is a film script's extension (`LEO (V.O.):`, `MAYA (CONT'D):`): how it is heard, not said
        kept = [d for d in _DIRECTION_PARTS.findall(direction)
                if not (_TIME_ONLY.fullmatch(d[1:-1].strip()) or _EXTENSION.fullmatch(d[1:-1].strip())
                        or _NAME_PRONOUNS.fullmatch(d[1:-1].strip()) or d[1:-1].strip() in _PRIVATE_MARKS)]
        if kept:
            rest = f"{' '.join(' '.join(kept).split())} {rest.lstrip()}"
    return name, rest


# ---------------------------------------------------------------------------------------------- layouts


def _layout_evidence(lines: Iterable[str]) -> tuple[int, int, int]:
    """(`NAME:` alone after a blank line, `NAME:` alone right after other text, `Name: text`) counts;
    a `NAME:` alone counts only when the next line is not itself a speaker line."""
    after_blank = compact = inline = 0
    pending = None  # the previous line was `NAME:` alone: "blank" or "compact" by what preceded it
    prev_blank = True
    for line in lines:
        stripped = line.strip()
        hit = split_speaker(stripped) if stripped else None
        if hit is None and stripped[:1] in _STAMP_STARTS and _is_stamped_message(stripped):
            # a chat export's message: `Name: text` behind a date, worth a play's lone `NAME:` line (a play
            # has no stamps; a message's own `TODO:` line must not make one)
            inline += 4
            pending, prev_blank = None, False
            continue
        if pending and stripped and hit is None:
            if pending == "blank":
                after_blank += 1
            else:
                compact += 1
        pending = None
        if hit is not None:
            if hit[1].strip():
                inline += 1
            else:
                pending = "blank" if prev_blank else "compact"
        prev_blank = not stripped
    return after_blank, compact, inline


# a document's section heads, in capitals before a paragraph (a recipe's, a textbook's, minutes'): no one's cue
_HEADS = frozenset("ingredients method methods directions instructions preparation example examples solution solutions "
                   "discussion decision decisions question questions answer answers problem problems exercise exercises "
                   "result results introduction conclusion conclusions abstract background preface foreword afterword "
                   "appendix agenda action actions step steps update edit warning tip tips contents index references "
                   "notes note summary overview purpose scope definitions letter song monday tuesday wednesday "
                   "thursday friday saturday sunday january february march april may june july august september "
                   "october november december morning afternoon evening night noon midnight today yesterday "
                   "tomorrow".split())  # (and a diary's days)


def _spaced_cues(lines: Iterable[str]) -> tuple[int, int]:
    """(a spaced play's count, all) of the cues in capitals that stand alone (or with a direction) between
    blank lines with a speech after them (`HAMLET.`, a blank line, `To be, or not to be`). A spaced play's
    count is kept only where two names or more do so twice or more, eight times in all (a book's
    `PREFACE.`, a post's `UPDATE:` and `EDIT:`, a contract's `WHEREAS, ...` before a paragraph are no play;
    nor are a song's `CHORUS` and `VERSE 1`, or a document's section heads, `INGREDIENTS.` and `METHOD.`):
    an excerpt of a few speeches is read as lines unless the play layout is asked for (then all count)."""
    seen: Counter = Counter()
    cue, prev_blank, gap = None, True, False  # a cue alone after a blank line; a blank line since it
    for line in lines:
        stripped = line.strip()
        if not stripped:
            gap, prev_blank = cue is not None, True
            continue
        hit = split_speaker(stripped)
        if cue is not None and gap and hit is None:
            seen[cue] += 1
        cue = (hit[0] if hit is not None and prev_blank and hit[0].isupper()
               and (not hit[1].strip() or _DIRECTION_ONLY.fullmatch(hit[1])) else None)  # (`LOPAKHIN, yawning.`)
        gap, prev_blank = False, False
    counted = [n for name, n in seen.items() if n >= 2 and name.split()[0] not in _LYRIC_LABELS
               and name.casefold() not in _HEADS and name.casefold() not in _NOT_NAMES]
    return (sum(counted) if len(counted) >= 2 and sum(counted) >= 8 else 0), sum(seen.values())


def detect_layout(lines: Iterable[str]) -> str:
    """'play' when speaker names mostly stand alone on their line with the speech below, else 'lines'.

    Evidence for play: `NAME:` alone followed by a line that is not itself a speaker line. Evidence for
    lines: `Name: text`. A play's speeches are several lines long and only a few of their lines hold a
    colon, so a play has far more of the former; a chat log has almost only the latter.
    """
    return _layout_of(_layout_evidence(lines))


WRAP_MIN = 50  # a hard wrap's lines are at least this long (wrapped at 60-80 columns)
_SENTENCE_END = frozenset(".!?:;\"'\u201d\u2019)]*\u2026")


def _wrapped_turns(lines: list[str]) -> bool:
    """Whether `Name: text` turns stand as paragraphs wrapped over several lines (Project Gutenberg's
    dialogues, a text editor's hard wrap): nearly every turn after a blank line, and many of them going on
    over the next line, which is no one's turn. A chat log with blank lines between messages reads the
    same either way, a message's next line being its own."""
    turns = unspaced = wrapped = 0
    prev_blank, cut = True, False  # cut: the last line was a turn's, long and ending mid-sentence
    for line in lines:
        stripped = line.strip()
        if not stripped:
            prev_blank, cut = True, False
            continue
        hit = split_speaker(stripped)
        if hit is not None and hit[1].strip():
            turns += 1
            unspaced += not prev_blank
            # a wrapped line is long and stops where the width did, mid-sentence (a narration line after a
            # turn ending `?` or `!`, a stage direction after `Get inside!`, is no wrap)
            cut = len(stripped) >= WRAP_MIN and stripped[-1] not in _SENTENCE_END
        elif cut and hit is None:
            wrapped += 1
            cut = False  # counted once a turn
        else:
            cut = False
        prev_blank = False
    return turns >= 3 and unspaced * 10 <= turns and wrapped * 3 >= turns


_TABLE_HEADS = frozenset("character speaker name who dialogue line lines text quote quotes".split())


def _tab_turn(line: str) -> tuple[str, str] | None:
    """(name, text) of a table's row `Name<TAB>text` whose first cell is a speaker's name; None otherwise."""
    if "\t" not in line:
        return None
    cells = [cell for cell in (c.strip() for c in line.split("\t")) if cell]  # tabs in a row: one gap
    if len(cells) != 2 or len(cells[0]) > MAX_NAME_CHARS or ":" in cells[0]:
        return None
    return (cells[0], cells[1]) if split_speaker(f"{cells[0]}: {cells[1]}") is not None else None


def _untabbed(line: str) -> str:
    """A table's row as `Name: text`; its header row (`Character<TAB>Dialogue`) as nothing; others as they are."""
    row = _tab_turn(line)
    if row is None:
        return line
    if row[0].casefold() in _TABLE_HEADS and row[1].casefold() in _TABLE_HEADS:
        return "\n"
    return f"{row[0]}: {row[1]}\n"


def _layout_of(evidence: tuple[int, int, int]) -> str:
    after_blank, compact, inline = evidence
    alone = after_blank + compact
    # Without blank lines between speeches, a file of mostly `Name: text` lines and a few names alone is a
    # transcript that writes some speeches under their name: read as lines, where such a name takes the
    # lines below it. A play would glue the inline turns of speakers not met before to the speech above.
    factor = 4 if after_blank >= compact else 2
    return "play" if alone and alone * factor > inline else "lines"


# A film script's transitions and page marks: formatting, no one's words (`CUT TO:`, `FADE OUT.`, `(MORE)`
# and `CONTINUED:` where a speech or scene runs over a page, a page number alone).
_TRANSITION = r"(?:[A-Z]+ )*(?:CUT|DISSOLVE|WIPE|FADE|IRIS)(?: (?:TO|IN|OUT))+(?: (?:BLACK|WHITE))?[:.]?"
_TRANSITION_NAME = re.compile(_TRANSITION, re.IGNORECASE)  # `CUT TO:` in a transcript is no one's name
_SCREEN_NOISE = re.compile(_TRANSITION + r"|"
                           r"\(MORE\)|\(?CONT(?:INUED|'D|\u2019D|D)\)?:?(?:[ \t]*\(?\d+[A-Z]?\)?\.?)?|\d{1,3}[A-Z]?\.?|"
                           r"THE END\.?|={3,}")
# A cue's extensions: `(V.O.)`, `(O.S.)`, `(CONT'D)`, `(into phone)`; `COP #1`; Fountain's `@McCLANE`, `^` (dual).
_SCREEN_CUE = re.compile(r"@?([^\W\d_][^\W_]*(?:[ .'\-&][ .'\-&]?[^\W_]+)*\.?(?: ?#\d{1,3})?)((?:[ \t]*\([^()\n]{1,30}\))*)[ \t]*\^?")
# A slugline with its scene numbers (`12   INT. DINER - NIGHT   12`, Fountain's `INT. DINER - NIGHT #12#`).
_NUMBERED_SLUG = re.compile(r"(?:(\d{1,4}[A-Z]{0,2})\.?[ \t]+)?((?:INT|EXT|EST|INT\.?/EXT|EXT\.?/INT|I/E)[. ].*?)"
                            r"(?:[ \t]+\1\.?|[ \t]*#[\w.-]+#)?")
# What only a film script has: a slugline or a transition, on a line of its own.
_FILM_MARK = re.compile(r"[ \t]*(?:\d{1,4}[A-Z]{0,2}\.?[ \t]+)?(?:INT|EXT|INT\.?/EXT|EXT\.?/INT|I/E)\.[ \t]*\S.*"
                        r"|[ \t]*(?:%s)[ \t]*" % _TRANSITION)
# Fountain's notes and boneyard (`[[...]]`, `/* ... */`), kept out of everyone's words.
_FOUNTAIN_NOTE = re.compile(r"\[\[.*?\]\]|/\*.*?\*/")
_MIXED_CASE_NAME = re.compile(r"\b(?:Mc|Mac|De|Di|Da|La|Le|Van|Von|O')(?=[A-Z])")  # McCLANE, DeLUCA


def _screen_cue(line: str) -> str | None:
    """The character's name when a line is a film script's cue: a name in capitals alone on its line, with
    its extensions (`MARY (O.S.)`, `DR. JONES (CONT'D)`, `McCLANE`, `COP #1`; any case after Fountain's `@`);
    not a heading, a transition, a page mark, a song's part or two cues side by side (dual dialogue)."""
    s = line.strip()
    if not s or len(s) > MAX_NAME_CHARS + 40 or not (s[0].isalpha() or s[:2].lstrip("@")[:1].isalpha()):
        return None
    m = _SCREEN_CUE.fullmatch(s)
    if m is None or "   " in s:
        return None
    name = m.group(1)
    forced = s[0] == "@"
    if (len(name) < 2 or len(name) > MAX_NAME_CHARS or len(name.split()) > MAX_NAME_WORDS
            or not (forced or _MIXED_CASE_NAME.sub("", name).isupper())
            or _SCREEN_NOISE.fullmatch(s) or _SECTION.match(s) or _HEADING.fullmatch(name)
            or (name.endswith(".") and not m.group(2))  # `ROMEO.` is a play's cue, `BANG.` a sound
            or name.split()[0].strip("-:") in _LYRIC_LABELS or name.split()[-1] in _SCREEN_WORDS):
        return None
    return name


# A song's parts in its lyrics (`VERSE 1`, `CHORUS`): no one's names.
_LYRIC_LABELS = frozenset("VERSE CHORUS PRE-CHORUS POST-CHORUS BRIDGE INTRO OUTRO HOOK REFRAIN BREAKDOWN "
                          "INSTRUMENTAL CODA INTERLUDE".split())
# A title page's and a shooting script's words (`SHOOTING DRAFT`, `BLUE REVISIONS`), and a script's own
# directions alone on a line (`INTERCUT`, `MONTAGE`, `SUPER`): no one's names.
_SCREEN_WORDS = frozenset(("DRAFT", "REVISION", "REVISIONS", "PAGES", *(w.upper() for w in _SCRIPT_DIRECTIONS)))


def _indent(raw: str) -> int:
    return len(raw) - len(raw.lstrip(" \t"))


def _screenplay(lines: Iterable[str], indented: bool = False) -> Iterator[str]:
    """A film script's lines with each cue (after a blank line, the speech right below it) as `NAME:`, and
    its transitions and page marks as blank lines, for the play layout's parser. In a script indented as
    printed (IMSDb), a cue stands deeper than the speech below it (`THE DOOR SLAMS OPEN` at the margin is
    action); a speech that runs over a page (`(MORE)`, a page number, the cue again with `(CONT'D)`) stays
    one speech, and so does its next paragraph, after a blank line at the speech's indent; Fountain's notes,
    forced-element marks and scene numbers go."""
    prev_blank = True
    cue, cue_line = None, ""
    speaking: str | None = None  # whose speech the lines are part of, while they are
    more: str | None = None  # the speech that `(MORE)` said goes on after the page break
    speech_at = -1  # the indent of the speech's last line
    paragraph = False  # a blank line after a speech, held back: the speech may go on below it
    for raw in _page_broken(lines):
        if "[[" in raw or "/*" in raw:
            raw = _FOUNTAIN_NOTE.sub("", raw)
            if not raw.strip():
                continue  # a note alone on its line: nothing, not a blank line
        s = raw.strip()
        if cue is not None:
            if s and (_indent(cue_line) > _indent(raw) or not indented):
                if more is not None and cue == more:  # the same speech after a page break: go on with it
                    more = None
                else:
                    yield f"{cue}:\n"
                speaking, cue = cue, None
            else:  # a name in capitals with nothing below it, or not standing deeper: a heading, action
                yield cue_line
                speaking, cue, prev_blank = None, None, not s
                if not s:
                    yield "\n"
                    continue
        if s == "(MORE)" and speaking is not None:
            more = speaking
            continue
        # a page mark; a number alone only between blank lines (`42` below a cue is a reply)
        if not s or (_SCREEN_NOISE.fullmatch(s) and (prev_blank or not s[:1].isdigit())):
            prev_blank = True
            if not s and indented and speaking is not None and more is None and speech_at >= 5:
                paragraph = True
            elif more is None and not paragraph:  # across a page break a speech goes on: no blank line yet
                speaking = None
                yield "\n"
            continue
        if paragraph:
            paragraph = False
            if abs(_indent(raw) - speech_at) <= 2 and _screen_cue(s) is None:
                prev_blank = False  # the speech's next paragraph
            else:
                speaking = None
                yield "\n"
        if prev_blank and (name := _screen_cue(s)) is not None:
            cue, cue_line, prev_blank = name, raw, False
            continue
        if more is not None:  # the page break was not in a speech after all
            more, speaking = None, None
            yield "\n"
        prev_blank = False
        if s[0] in ".!~>" and (slug := _fountain_element(s)) is not None:
            if s[0] == ".":  # a scene heading forced: a new scene, as a slugline is
                yield "***\n"
            raw = slug + "\n"
        elif (m := _NUMBERED_SLUG.fullmatch(s)) is not None and (m.group(1) or m.group(0) != m.group(2)):
            raw = m.group(2).strip() + "\n"
        if speaking is not None:
            speech_at = _indent(raw)
        yield raw
    if cue is not None:
        yield cue_line


def _page_broken(lines: Iterable[str]) -> Iterator[str]:
    """A page break (pdftotext's form feed, `\f`, at the start of a page's first line) as the blank line it
    is: the page's header (`2.`) is then a page mark, and a cue at the top of the page a cue."""
    for raw in lines:
        if "\f" in raw:
            yield "\n"
            raw = raw.replace("\f", "")
            if not raw.strip():
                continue
        yield raw


def _fountain_element(s: str) -> str | None:
    """A Fountain line's text without its forcing mark: `.THE ROOF` (a scene heading), `!SHE SCREAMS.`
    (action), `~lyrics`, `> CENTERED <`; None for any other line."""
    if s[0] == "." and s[1:2].isalpha():
        return s[1:]
    if s[0] in "!~" and s[1:2] and s[1:2] not in "!~":
        return s[1:].strip()
    if s[0] == ">" and s.endswith("<"):
        return s[1:-1].strip()
    return None


def _screen_cue_indents(lines: list[str]) -> list[int]:
    """The indents of the film-script cues in the lines (a name in capitals after a blank line, with text
    below): how many there are, and whether they stand indented as printed (`_indented_cues`)."""
    found = []
    lines = list(_page_broken(lines)) if any("\f" in line for line in lines) else lines
    for i, line in enumerate(lines[:-1]):
        before = lines[i - 1].strip() if i else ""
        if (not before or _SCREEN_NOISE.fullmatch(before)) and lines[i + 1].strip() and _screen_cue(line) is not None:
            found.append(_indent(line))
    return found


def _indented_cues(indents: list[int]) -> bool:
    """Whether a film script stands indented as printed (IMSDb): most of its cues 8 columns in or more."""
    return bool(indents) and sorted(indents)[len(indents) // 2] >= 8


def _forced_layout_note(layout: str, looks: str, evidence: tuple[int, int, int], screen: int, file: str, n: int,
                        stats: ReadStats) -> None:
    alone, inline = evidence[0] + evidence[1], evidence[2]
    where = f"{file or 'the text'}"
    if looks == "screenplay":
        note = (f"--layout {layout}, but {where} looks like a film script ({screen} names in capitals alone on a "
                f"line with the speech below, in its first {n} lines): --layout screenplay (or auto) reads its speeches")
    elif layout == "screenplay":
        note = (f"--layout screenplay, but {where} has {screen} film-script cue(s) (a name in capitals alone on a line, "
                f"the speech below) in its first {n} lines: --layout auto reads it as {looks}")
    elif layout == "play":
        note = (f"--layout play, but {where} looks like `Name: text` lines ({inline} in its first {n} lines, "
                f"{alone} name(s) alone on a line): each speech runs on over the lines below it; --layout lines "
                "(or auto) reads each line as a turn")
    else:
        note = (f"--layout lines, but {where} looks like a play ({alone} name(s) alone on a line with the speech "
                f"below, in its first {n} lines): a speech line that reads as `Name: text` (`Come: let us go`) is "
                "a turn of its own; --layout play (or auto) reads the speeches")
    stats.add_note(note, hint=True)


def parse_lines(
    lines: Iterable[str],
    file: str = "",
    layout: str = "auto",
    stats: ReadStats | None = None,
    stamps: dict | None = None,
) -> Iterator[Turn | None]:
    """Turns from raw text lines (newlines may be present at the ends). Pure: no I/O.

    Empty turns (`Bob:` with no text in the lines layout, an empty speech in a play) are yielded with
    text "" so the caller can count them; they never become context or samples.
    """
    if stats is None:
        stats = ReadStats()
    it: Iterator[str] = iter(lines)
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    head = list(itertools.islice(it, DETECT_LINES))
    subs = subtitles.kind(head, file)
    if subs is not None:  # their cue numbers, times and markup are no one's words
        note = (f"{file or 'the text'}: subtitles: " + ("each Dialogue event read, its Name field the speaker"
                if subs == "ass" else "cue numbers, times and markup left out; a line is a turn only where it "
                "names its speaker (`BOB: text`, WebVTT's `<v Bob>`)"))
        stats.add_note(note, hint=True)
        it = subtitles.lines_of(itertools.chain(head, it), subs, split_speaker)
        head = list(itertools.islice(it, DETECT_LINES))
    elif (copied := chatcopy.kind(head)) is not None:  # a chat app's copy: its headers made a chat log's lines
        it = chatcopy.lines_of(itertools.chain(head, it), copied)
        head = list(itertools.islice(it, DETECT_LINES))
    elif (exported := chatexports.kind(head)) is not None:  # LINE's, KakaoTalk's, ... own text export
        stats.add_note(f"{file or 'the text'}: {exported}'s chat export", hint=True)
        it = chatexports.lines_of(itertools.chain(head, it), exported)
        head = list(itertools.islice(it, DETECT_LINES))
    else:
        for prefix in (_HEXCHAT_DAY, _WHISPER_TIMES):  # a time on each line the text reader has no use for
            if sum(1 for line in head[:200] if prefix.match(line)) >= 3:  # at the line's start only
                it = (line[m.end():] if (m := prefix.match(line)) else line for line in itertools.chain(head, it))
                head = list(itertools.islice(it, DETECT_LINES))
                break
        else:
            tabbed = sum(1 for line in head[:400] if _tab_turn(line) is not None)
            if tabbed >= 3 and 2 * tabbed > sum(1 for line in head[:400] if line.strip()):
                # a wiki's transcript table copied from a browser: `SpongeBob<TAB>I'm ready!`
                it = (_untabbed(line) for line in itertools.chain(head, it))
                head = list(itertools.islice(it, DETECT_LINES))
            elif _kagi_script(head):  # `男「なあ」`: a Japanese script's lines, with a colon from here on
                it = (_dekagi(line) for line in itertools.chain(head, it))
                head = list(itertools.islice(it, DETECT_LINES))
    # a book's introduction before the first speech (a Gutenberg play's preface): judge from what follows it
    chunk = head
    while len(chunk) == DETECT_LINES and len(head) < MAX_PROLOGUE_LINES and not any(map(_may_speak, chunk)):
        chunk = list(itertools.islice(it, DETECT_LINES))
        head = head + chunk
    it = itertools.chain(head, it)
    # a play may write its cues `ROMEO.` alone, or `ALGERNON.  Did you hear...` (Project Gutenberg)
    dotted = _dotted_cast(head)
    cued = list(_gutenberg(head, dotted))
    evidence = _layout_evidence(cued)
    spaced, spaced_any = _spaced_cues(cued)
    spaced_play = spaced > evidence[0]  # most cues alone have a blank line before their speech
    evidence = (evidence[0] + spaced, evidence[1], evidence[2])
    timed = _timed_log(head)
    looks = "lines" if timed else _layout_of(evidence)
    if not timed and dotted and looks == "lines" and 2 * sum(dotted.values()) > evidence[2]:  # (counted there too)
        looks = "play"  # `NAME.  text` speeches wrap over several lines to the blank line
    wrapped = (subs is None and not timed and looks == "lines" and _wrapped_turns(cued)
               and not looks_like_chat_export(head))
    if wrapped:  # `Name: text` paragraphs wrapped at 70 columns: each speech runs to its blank line, as a play's
        looks = "play"
    cue_indents = [] if timed else _screen_cue_indents(head)
    screen = len(cue_indents)
    # cues in capitals without a colon, more than any other kind (a Fountain title page's `Title:` lines not
    # counted): three, or two in a scene with a slugline or a transition (a short excerpt; one could be a
    # story's title over its first paragraph)
    enough = 2 if screen >= 2 and any(_FILM_MARK.fullmatch(line.rstrip("\r\n")) for line in head) else 3
    if screen >= enough and screen > sum(evidence) - _header_lines(head):
        looks = "screenplay"
    # the play layout asked for a short excerpt of a spaced play: a few spaced cues are enough (and no note)
    loose = spaced_any if layout == "play" and looks != "play" and not spaced_play else 0
    if layout == "auto":
        layout = looks
    elif layout != looks and not loose:  # forced against what the file looks like: say so
        _forced_layout_note(layout, looks, evidence, screen, file, len(head), stats)
    stats.layouts[file or "<text>"] = layout
    if wrapped and layout == "play":
        stats.add_note(f"{file or 'the text'}: `Name: text` paragraphs wrapped over several lines: each speech runs "
                       "to its blank line (--layout lines reads each line alone)", hint=True)
    if layout == "screenplay":
        screenplay = _screenplay(it, indented=_indented_cues(cue_indents))
        head = list(itertools.islice(screenplay, DETECT_LINES))
        return _sections(_parse_play(itertools.chain(head, screenplay), file, stats, cast=_cast_of(head)))
    if layout == "play":
        spaced_play = spaced_play or loose > evidence[0] - spaced
        # A play written without blank lines between speeches (most `NAME:` lines follow other text):
        # a `NAME:` alone inside a speech starts the next one. Not otherwise: in a play with blank lines,
        # a speech line like `Come:` or `Hear me speak:` is text (tinyshakespeare has 85).
        after_blank, compact, _ = evidence
        return _sections(_parse_play(_gutenberg(it, dotted), file, stats, compact=compact > after_blank,
                                     cast=_cast_of(cued), spaced=spaced_play))
    # a script that quotes a chat message or two (not a chat export): its own `Name: text` lines end a message
    script = not looks_like_chat_export(head)
    bracketed = _bracket_cast(head) if script and subs is None else None  # (subtitles' are captions' labels)
    if bracketed:  # a game's dialogue dump: `[Geralt] Wind's howling.`
        it = (_debracket(line, bracketed) for line in it)
    turns = _parse_one_line(_join_indented(it), file, stats, stamps, script, timed=timed)
    return _sections(turns) if script else turns


def _sections(turns: Iterable[Turn | None]) -> Iterator[Turn | None]:
    """`BREAK` before a scene's or chapter's heading (`_SECTION`) that follows some speech: a new scene is a
    new conversation, its heading the first line of its context (`ACT II` then `SCENE I.` stay together).
    And a header's fields before anyone speaks (`Title: ...`, `Author: ...`) are narration."""
    spoke = False
    section = _SECTION.match
    turns = iter(turns)
    for t in turns:  # the header: until someone other than a header's field speaks
        if t is not None and t[0] is not None:
            if not _is_header_field(t[0]):
                spoke = True
                yield t
                break
            t = t._replace(speaker=None, text=f"{t[0]}: {t[1]}".rstrip())
        yield t
    for t in turns:
        if t is None:
            spoke = False
        elif t[0] is not None:
            spoke = True
        elif spoke and section(t[1]):
            spoke = False
            yield BREAK
        yield t


def _header_lines(head: list[str]) -> int:
    """How many lines are a header's fields (`Title: ...`, `Draft date: ...`)."""
    return sum(1 for line in head if ":" in line[:MAX_NAME_CHARS + 1] and (hit := split_speaker(line.strip()))
               and _is_header_field(hit[0]))


def _is_header_field(name: str) -> bool:
    """`Title`, `Release Date`...; not in capitals (`CONTACT`, `AUTHOR` are a script's cues)."""
    folded = name.casefold()
    return (folded in _HEADER_FIELDS or folded in _HEADER_PHRASES) and not name.isupper()


def _may_speak(line: str) -> bool:
    """Whether a line could be a turn or a cue of any layout (`Name:`, `ROMEO.`, `JOE` in capitals, a chat
    export's stamped message: else the whole of a WhatsApp export's first 200,000 lines was read as a
    book's introduction before its dialogue)."""
    s = line.strip()
    return bool(s) and (split_speaker(s) is not None or (s[:1] in _STAMP_STARTS and _is_stamped_message(s))
                        or (s[-1:] == "." and _dotted_cue(s) != s)
                        or (s.isupper() and _screen_cue(s) is not None) or (s[:1] == "<" and _BARE_NICK.fullmatch(s) is not None))


# A game's dialogue dump names the speaker in brackets: `[Geralt] Wind's howling.`
_BRACKET_NAME = re.compile(r"[ \t]*\[([^\W\d_][^\W_]*(?:[ .'\-][^\W_]+){0,%d})\][ \t]*(\S.*?)\s*" % (MAX_NAME_WORDS - 1))
# what transcripts and plays put in brackets at the start of a line, which is no one's name
_BRACKET_WORDS = frozenset("enter exit exeunt aside music applause laughter laughing silence sound sfx inaudible "
                           "crosstalk beat pause cheering singing sighs sigh laughs chuckles groans scene narrator "
                           "narration foreign unintelligible indistinct voiceover offscreen phone thunder static "
                           "interpreter in on over off into speaking whispering whispers ooc flashback cutscene choice "
                           "option system tutorial hint note info title added fixed changed removed deprecated "
                           "security done todo wip quest achievement persuade sarcastic".split())


def _bracket_cast(head: list[str]) -> Counter:
    """Names in brackets that start lines with text after them (`[Geralt] Hm.`), when such lines outnumber
    `Name: text` lines and one name starts three of them or more, or two names two each (a short excerpt):
    a dump's speakers, those with a line or two among them too; `[Aside] ...`, `[laughs] ...` are not."""
    seen: Counter = Counter()
    plain = 0
    for line in head:
        if line.lstrip()[:1] != "[":
            plain += line.find(":", 0, _COLON_WITHIN) > 0 and split_speaker(line.strip()) is not None
            continue
        m = _BRACKET_NAME.fullmatch(line)
        if m is None or not m.group(1)[0].isupper() or len(m.group(1)) > MAX_NAME_CHARS:
            continue
        if split_speaker(m.group(2)) is not None:  # `[Guild] Alice: hi`: a channel's tag, the speaker after it
            plain += 1
            continue
        first = m.group(1).split()[0].casefold()
        if first not in _BRACKET_WORDS and not _is_action_word(first):
            seen[m.group(1)] += 1
    cast = Counter({name: n for name, n in seen.items() if n >= 2})  # a label used once is no one's name
    dump = any(n >= 3 for n in cast.values()) or len(cast) >= 2
    return cast if dump and sum(cast.values()) > plain else Counter()


def _debracket(line: str, cast: Counter) -> str:
    """A cast member's `[Name] text` line as `Name: text`; any other line as it is."""
    if (line.lstrip()[:1] == "[" and (m := _BRACKET_NAME.fullmatch(line)) is not None and m.group(1) in cast
            and split_speaker(m.group(2)) is None):
        text = m.group(2)
        if text.startswith(": ") or text == ":":  # `[Alice]: hey`; not an emoticon's colon, `[Alice] :) great`
            text = text[1:].lstrip()
        return f"{m.group(1)}: {text}\n"
    return line


def _timed_log(head: list[str]) -> bool:
    """Whether most lines start with a bare time and a speaker (`12:01 Bob: hi`, a game's or stream's chat
    log): then such a time is a stamp from the first line on, not only once a message has shown one."""
    lines = [line.strip() for line in head if line.strip()]
    timed = 0
    for text in lines:
        found = _stamp(text) if text[:1].isdigit() else None
        if found is not None and not found[1] and split_speaker(text[found[0].end():]) is not None:
            timed += 1
    return timed >= 3 and timed * 2 >= len(lines)


# A Project Gutenberg play's speech on its cue's line: `ALGERNON.  Did you hear...`, `LANE [_going_].  Yes, sir.`
_DOTTED_INLINE = re.compile(r"[ \t]{0,12}([^\W\d_][^\W_]*(?:[ .'\-&]+[^\W_]+)*)((?:[ \t]*(?:\[[^\[\]\n]{1,120}\]|"
                            r"\([^()\n]{1,120}\)))*)\.[ \t]+(\S.*?)\s*")


# Words in capitals that start a sentence with a full stop and are no one's name.
_DOTTED_WORDS = frozenset("OK NO YES PS P.S NB N.B MR MRS MS DR ST BANG AH OH SO WELL NOTE".split())


# abbreviated titles a name's full stop may follow (`MRS. ALVING`, `LIEUT. HASTINGS`); or an initial
_TITLES = frozenset("MR MRS MS MME MLLE MM DR ST SR SGT SERGT LT LIEUT CAPT COL GEN MAJ ADM CDR CMDR CPL PVT PROF REV "
                    "HON GOV SEN FR BRO SIS MST MSTR".split())
_CUE_STOP = re.compile(r"\.[ \t]+(?=\S)")  # where a cue's full stop may end it, before its speech
_IN_NAME_STOP = re.compile(r"\.[ \t]{2,}")  # a full stop and two spaces end a sentence, never a name's word


def _dotted_inline(text: str, cast: Counter | None = None) -> tuple[str, str, str] | None:
    """(name, directions, speech) of a `NAME.  speech` line in capitals; None for any other line. The name
    ends at the last full stop that leaves it a name in capitals: a speech with full stops of its own
    (`LANE.  Mr. Ernest Worthing.`) does not make the whole line a name, nor `MRS. ALVING.` a Mrs. A name of
    the play's `cast` comes first (`SOLDIER. HALT. Who goes there?` is the soldier's)."""
    if _DOTTED_INLINE.fullmatch(text) is None or _SECTION.match(text):
        return None
    # (a cue's name and directions are short: a long line's later full stops are its speech's)
    stops = [m.start() for m in _CUE_STOP.finditer(text, 0, MAX_NAME_CHARS + 130)]
    known = [p for p in stops if text[:p].strip() in cast] if cast else []
    for stop in known + stops[::-1]:
        m = _DOTTED_INLINE.fullmatch(text[:stop] + ". x")
        if m is None or m.group(3) != "x":  # the name and directions end at an earlier stop: tried in its turn
            continue
        name = m.group(1)
        # a full stop inside a name ends a title's abbreviation (`MRS. ALVING`, `DR. RANK`), not a name
        # (`SOLDIER. HALT`, `MARIE. M`)
        titled = all(len(word) <= 4 or word in _TITLES for word in (p.split()[-1] for p in name.split(". ")[:-1]))
        if (2 <= len(name) <= MAX_NAME_CHARS and name.isupper() and len(name.split()) <= MAX_NAME_WORDS
                and titled and not _IN_NAME_STOP.search(name) and not _HEADING.fullmatch(name)):
            return name, m.group(2), _CUE_STOP.split(text[stop:], 1)[1].strip()
    return None


def _dotted_cast(head: list[str]) -> Counter:
    """The names of `NAME.  speech` lines that open a block (after a blank line) twice or more, with how
    many such lines they open: a Project Gutenberg play's cast, when it has two names or more and three
    such lines (`OK. The car is packed.` in a story is prose, however often)."""
    seen: Counter = Counter()
    prev_blank = True
    for line in head:
        s = line.strip()
        if s and prev_blank and s[0].isupper() and (hit := _dotted_inline(s)) is not None:
            seen[hit[0]] += 1
        prev_blank = not s
    cast = Counter({name: n for name, n in seen.items() if n >= 2 and name not in _DOTTED_WORDS})
    return cast if len(cast) >= 2 and sum(cast.values()) >= 3 else Counter()


_PERSONS_LINES = 60  # the longest list of persons read as one: its block, to a blank line or a heading


def _gutenberg(lines: Iterable[str], cast: Counter) -> Iterator[str]:
    """Lines with a Project Gutenberg play's cues as `NAME:` (`_dotted_cue`), and, when the play has a
    `cast` of them (`_dotted_cast`; empty: none), a `NAME.  speech` opening a block as `NAME: speech`: the
    cast's, and those of characters met later on or only once. A cue with its direction after a comma
    (`DORINE, à Damis.`) opens a block, and is not followed by a line of the same shape (a list of persons:
    `ROMEO, son to Montague.`, then `MERCUTIO, ...`). In a list of persons under its heading (`DRAMATIS
    PERSONAE`, `PERSONNAGES`, ...), to the end of its block (a blank line after its first name) or a
    heading, no line is a cue."""
    prev_blank = True
    persons = 0  # lines left of a list of persons (after `DRAMATIS PERSONAE`): no cues in it
    it = iter(lines)
    line = next(it, None)
    while line is not None:
        after = next(it, None)
        s = line.strip()
        if not s:
            prev_blank = True
            persons = 0 if persons < _PERSONS_LINES else persons  # the list ends with its block
        elif persons and not _SECTION.match(s):
            persons -= 1
            prev_blank = False
        else:
            persons = _PERSONS_LINES if s.rstrip(".:").upper() in _PERSONS_HEADINGS else 0
            if persons and s.endswith(":"):  # `Personen:` heads the list; it is no one's cue
                line = s.rstrip(":") + "\n"
            elif cast and prev_blank and (hit := _dotted_inline(s, cast)) is not None and hit[0] not in _DOTTED_WORDS:
                line = f"{hit[0]}{hit[1]}: {hit[2]}\n"
            else:
                listed = after is not None and (head := after.partition(",")[0].strip()) != after.strip()
                listed = (listed and head.isupper() and 1 < len(head) <= MAX_NAME_CHARS  # `MERCUTIO, friend to`
                          and head not in _DOTTED_WORDS)  # not `O, Romeo, Romeo!`, `I, madam?`, `OH, no`
                line = _dotted_cue(line, comma=prev_blank and not listed)
            prev_blank = False
        yield line
        line = after


_ORDINAL = re.compile(r"\d{1,2}(?:ST|ND|RD|TH) ")  # `2ND MURDERER.`
# a play's own words, and its list of persons
_PERSONS_HEADINGS = frozenset(("DRAMATIS PERSONAE", "DRAMATIS PERSONÆ", "PERSONS OF THE PLAY", "THE PERSONS OF THE PLAY",
                               "PERSONS REPRESENTED", "CHARACTERS", "CAST", "CAST OF CHARACTERS", "PERSONNAGES",
                               "LES PERSONNAGES", "PERSONEN", "PERSONAS", "PERSONAGGI", "ДЕЙСТВУЮЩИЕ ЛИЦА"))
# and what is read out or sung in a play, headed in capitals (`LETTER.`, `SONG.`): no one's cue
_NO_CUES = _PERSONS_HEADINGS | frozenset(("THE END", "END", "FINIS", "CURTAIN", "EXIT", "EXEUNT", "EXEUNT OMNES",
                                          "LETTER", "THE LETTER", "SONG", "LETTRE", "CHANSON", "BRIEF", "LIED",
                                          "CARTA", "CANCIÓN", "ПИСЬМО", "ПЕСНЯ"))


# a French (or older English) play's direction after its cue's comma: lower case, unlike a list of who is on
_COMMA_DIRECTION = re.compile(r"([^\W\d_][^\W_]*(?:[ .'\-]+[^\W_]+)*),[ \t]+([^\s.][^\n.]{0,59})")  # no `. Ah!`


def _dotted_cue(line: str, comma: bool = False) -> str:
    """A play's cue written in capitals with a full stop, alone on its line (`ROMEO.`, `FIRST CITIZEN.`, as
    Project Gutenberg's plays have them), as `ROMEO:`; any other line as it is. A heading (`ACT I.`)
    stays. A direction before the full stop stays with the speech (`LIZA [_crying_].`), and, where `comma`
    allows, one after a comma in lower case (`DORINE, à Damis.`, not `ORONTE, ALCESTE.`: who is on)."""
    s = line.strip()
    if len(s) < 3 or s[-1] != "." or not (s[0].isalpha() or _ORDINAL.match(s)):
        return line
    name, direction = s[:-1], ""
    if name[-1:] in ")]" and (m := _DOTTED_INLINE.fullmatch(f"{s} x")) is not None:
        name, direction = m.group(1, 2)
    elif (comma and (m := _COMMA_DIRECTION.fullmatch(name)) and m.group(2)[0].islower() and len(m.group(1)) > 1
          and m.group(1) not in _DOTTED_WORDS and m.group(2).split()[0] not in _SUBJECTS):  # `STOP, she said.`
        name, direction = m.group(1), f" ({m.group(2)})"  # `DORINE, à Damis.`, `ALCESTE, assis.`
    if (len(name) > MAX_NAME_CHARS or not name.isupper() or len(name.split()) > MAX_NAME_WORDS
            or _HEADING.fullmatch(name) or name in _NO_CUES or "," in name):  # `ORONTE, ALCESTE.`: who is on
        return line
    return f"{name}{direction}:\n"


def _speech_column(raw: str) -> tuple[int, int | None] | None:
    """(indent, column where the speech starts, None when the cue stands alone) of a `Name: text` line, tabs
    as 8 columns; None when the line is not one."""
    text = raw.strip()
    hit = _FAST_SPEAKER.match(text)
    if hit is None or hit.group(1).lower() in _NOT_NAMES:
        hit = split_speaker(" ".join(text.split()))
    if not hit:
        return None
    line = raw.rstrip("\r\n").expandtabs(8)
    indent = len(line) - len(line.lstrip())
    colon = min((i for i in (line.find(":"), line.find("\uff1a")) if i >= 0), default=-1)
    rest = line[colon + 1:]
    return indent, (len(line) - len(rest.lstrip()) if rest.strip() else None)


def _join_indented(lines: Iterable[str]) -> Iterator[str]:
    """Lines where one indented as far as the speech on the `Name: text` line above it (a wrapped speech,
    aligned under its text), or deeper than a cue that stands alone, is joined to that line; an empty line
    takes its place, so that line numbers hold. Narration indented otherwise stays narration."""
    it = iter(lines)
    prev = next(it, None)
    if prev is None:
        return
    cols, joined = False, 0  # the line before's columns once needed; how many lines it took in
    more: list[str] = []  # those lines, joined once: a speech wrapped over thousands of lines stays linear
    for raw in it:
        if raw[:1] in " \t" and not raw.isspace():  # the hot path skips this: most lines start with a letter
            if cols is False:
                cols = _speech_column(prev)
            if cols is not None and _speech_column(raw) is None:
                expanded = raw.expandtabs(8)
                indent = len(expanded) - len(expanded.lstrip())
                if indent == cols[1] or (cols[1] is None and indent > cols[0]):
                    more.append(raw.strip())
                    joined += 1
                    continue
        yield " ".join([prev.rstrip(), *more]) if more else prev
        if joined:
            yield from itertools.repeat("", joined)
            joined = 0
            more = []
        prev, cols = raw, False
    yield " ".join([prev.rstrip(), *more]) if more else prev
    if joined:
        yield from itertools.repeat("", joined)


def _parse_one_line(lines: Iterable[str], file: str, stats: ReadStats, stamps: dict | None = None,
                    script: bool = False, timed: bool = False) -> Iterator[Turn | None]:
    """The lines layout. `stamps`, when given, gets each chat message's date and time by its line number
    (sources/chatlog.py). In a `script` (a file that is not a chat export, but may quote a stamped message),
    a `Name: text` line ends the message before it instead of continuing it. `timed`: a log whose lines
    start with a time and no date (`12:01 Bob: hi`)."""
    fast = _FAST_SPEAKER.match
    new = tuple.__new__  # Turn(...) without the Python-level __new__: a third of the cost
    n = 0
    # Chat exports with a date or time before each message (`_stamped`): `held` is the last message, which
    # the lines after it without a stamp continue (WhatsApp writes a message of several lines so; IRC
    # does not: its unstamped lines are the client's); `dated` says which stamps the file uses, once known.
    held, held_irc, held_swallow, dated, shape = None, False, False, (False if timed else None), None
    # A `Name:` alone (`cue`): the lines below it, to a blank line or the next turn, are its speech (a
    # transcript that writes some speeches under their name). Empty if none follows.
    cue: Turn | None = None
    # the lines that continue `held` and `cue`, joined once when it is said (`_grown`): a message of 80,000
    # lines was copied whole at each of them
    held_more: list[str] = []
    cue_more: list[str] = []
    for n, raw in enumerate(lines, 1):
        if raw.isascii():
            m = fast(raw)
            if m is not None:  # the common case: `Name: text`
                hit = m.groups() if m.group(1).lower() not in _NOT_NAMES else None
            else:  # `Old Tom: text`, as split_speaker would say (the line starts with a letter: no stamp)
                hit = _plain_split(raw) or None
            if hit is not None and (held is None or held_irc or script):
                name, text = hit
                text = text.strip()
                if text[:1] in "[(":
                    text = _untimed(text)
                if "  " in text or not text.isprintable():  # tabs, runs of spaces; NULs, escape codes
                    text = one_clean_line(text)
                if held is not None:
                    yield _grown(held, held_more)
                    held = None
                if cue is not None:
                    yield _grown(cue, cue_more)
                    cue = None
                if text:
                    yield new(Turn, (name, text, file, n))
                else:
                    cue = new(Turn, (name, text, file, n))
                continue
            text = one_clean_line(raw)
        else:
            text = clean_text(raw, stats)
        if not text:
            if cue is not None:
                yield _grown(cue, cue_more)
                cue = None
            continue
        if cue is not None:
            if dated is None and (text[0] not in _STAMP_STARTS or _stamp(text) is None) and split_speaker(text) is None \
                    and not (text[0] == "<" and _BARE_NICK.fullmatch(text)) and not _SCENE_BREAK.fullmatch(text) \
                    and not _transition_line(text):
                cue_more.append(text)
                continue
            yield _grown(cue, cue_more)
            cue = None
        if "\t" in raw and (log := _weechat(raw)) is not None:  # `2024-01-01 12:03:00<tab>carol<tab>hi`
            if held is not None:
                yield _grown(held, held_more)
                held = None
            dated = True if dated is None else dated
            when, name, message = log
            if stamps is not None and name is not None:
                stamps[n] = when
            yield Turn(name, clean_text(message, stats), file, n)
            continue
        found = _stamp(text) if text[0] in _STAMP_STARTS else None
        if found is not None and dated is not None and (found[1] != dated or (shape and _shape(found[0]) != shape)):
            found = None  # not the file's kind of stamp: `10:30 breakfast` inside a WhatsApp message
        if found is not None:
            stamp, is_dated = found
            # a time alone is a stamp before a nick, or anywhere once the file's messages have shown such stamps
            parsed = _stamped(text[stamp.end():], bare=not is_dated and not stamp.group(1) and dated is None)
            if parsed is not None:
                if held is not None:
                    yield _grown(held, held_more)
                    held = None
                kind, name, message = parsed
                if dated is None and kind != "system":
                    dated, shape = is_dated, _shape(stamp) if is_dated else None
                if kind == "drop":
                    continue
                if stamps is not None:
                    stamps[n] = stamp.group(0)
                if kind != "system":
                    held, held_irc, held_swallow = Turn(name, message, file, n), kind == "irc", kind == "poll"
                    continue
                # the export's own line; before any message it may be prose (read below), unless an IRC
                # client's (`19:00 -!- alice has joined`)
                if dated is not None or _client_line(message, is_dated):
                    yield Turn(None, message, file, n)
                    continue
        hit = None
        if held is not None:
            if not held_irc:
                hit = split_speaker(text) if script else None  # a script's next speaker ends the message
                if hit is None:  # the message's next line, whatever it looks like (`---`, `Bob:`)
                    if held_swallow:
                        continue
                    if not text.isascii():
                        text = text.translate(_INVISIBLE).strip()
                    if text.endswith(_EDITED):  # WhatsApp marks an edited message at its end
                        text = text[: -len(_EDITED)].rstrip()
                    if text:
                        held_more.append(text)
                        if len(held_more) == RUNAWAY_LINES:
                            stats.add_note(
                                f"{file}:{held.line}: one message runs on for {RUNAWAY_LINES:,} lines or more (a line "
                                "without the file's kind of date and time continues the message before it): are two "
                                "exports in other formats joined in this file? Give each as a file of its own", hint=True)
                    continue
            yield _grown(held, held_more)
            held = None
        if hit is None and text[0] == "<" and (irc := _BARE_NICK.fullmatch(text)) is not None:
            yield Turn(irc.group(1), irc.group(2), file, n)  # a chat log without times: `<Steve> hi`
            continue
        hit = hit or split_speaker(text)
        if hit is None:
            if not _transition_line(text):  # a script's `CUT TO:`: formatting, no one's words (as in a film script)
                # a scene break, an IRC client's log session opening or closing: a new conversation
                yield BREAK if _SCENE_BREAK.fullmatch(text) or text.startswith(_LOG_SESSION) else Turn(None, text, file, n)
            continue
        said = hit[1].strip()
        if said[:1] in "[(":
            said = _untimed(said)
        if said:
            yield Turn(hit[0], said, file, n)
        else:
            cue = Turn(hit[0], "", file, n)
    if held is not None:
        yield _grown(held, held_more)
    if cue is not None:
        yield _grown(cue, cue_more)
    stats.lines += n


# A chat message continued for this many lines is likely a second export in another format (an Android
# WhatsApp export joined to an iPhone one): the report says so
RUNAWAY_LINES = 1000


def _grown(turn: Turn, more: list[str]) -> Turn:
    """`turn` with the lines that continue it (`more`, emptied) joined to its text."""
    if not more:
        return turn
    text = " ".join([turn.text, *more]).strip()
    more.clear()
    return turn._replace(text=text)


def _untimed(text: str) -> str:
    """A turn's text without a transcript's time before it (`[00:00:06] Thanks`: Descript's, Rev's)."""
    lead = _LEAD_TIME.match(text)
    return text[lead.end():] if lead is not None else text


def _transition_line(text: str) -> bool:
    """Whether a line is a script's transition alone (`CUT TO:`, `FADE IN:`)."""
    return text[-1:] in ":." and _TRANSITION_NAME.fullmatch(text) is not None


def _client_line(text: str, dated: bool) -> bool:
    """Whether the text after a stamp is an IRC client's own line (`-!- alice has joined`); `* text` only
    after a date (after a time alone it may be a note's)."""
    return _IRC_CLIENT.match(text) is not None and (dated or text[:1] != "*")


def _stamped(rest: str, bare: bool) -> tuple[str, str | None, str] | None:
    """What a chat export's line is, after its stamp: ("irc" | "chat", name, message) for a message
    (WhatsApp's `Alex: hey`, IRC's `<alex> hey`), ("system", None, text) for the export's own notices
    (`Alex left`, `* alex waves`, an iPhone's notice under the chat's name), ("drop", None, "") for the
    encryption notice. None where it is none of these: `bare` (a time alone, no date, no brackets) is a
    stamp only before an IRC nick or an IRC client's own line."""
    if rest[:1] == "[" and (tags := _LOG_TAGS.match(rest)) is not None:
        rest = rest[tags.end():]  # a game server's `[Server thread/INFO]: <Steve> hi` (Minecraft)
    irc = _IRC_NICK.match(rest)
    if irc is not None:
        return "irc", irc.group(1), irc.group(2).strip()
    if bare:
        return ("system", None, rest.strip()) if _client_line(rest, False) else None
    if "end-to-end encrypt" in rest and ":" not in rest.split("end-to-end", 1)[0]:
        return "drop", None, ""
    if rest[:2] == "| ":  # `2024-01-05 21:00 | alex: hey`: a column rule between the stamp and the sender
        rest = rest[2:]
    hit = None
    if rest[:1] not in "*-<[(#!\"'":  # `-!- Topic for #chan: ...`, `* alex says: brb`: the client's lines
        # the sender is all before the first `: ` as the contact is saved (`Dave (Uni)`, `Smith, John`)
        hit = _loose_speaker(rest) or split_speaker(rest)
    if hit is None:
        return "system", None, rest.translate(_INVISIBLE).strip()
    name, message = hit[0].translate(_INVISIBLE).strip(), hit[1].strip()
    if name[:1] == "~" and len(name) > 1:  # an iPhone's mark of a sender not in the contacts: `~ Jordan`
        name = name[1:].strip(" \u202f\u00a0")
    name = undecorated(name, emoji=False)  # a contact's emoji may tell two people apart (`Alex 🎮`, `Alex 🎨`)
    if "," in name or ":" in name:
        name = speaker_name(name)  # as Discord's and CSV's: `--name` splits at commas
    notice = message.startswith("\u200e")  # an iPhone's own words: a notice, or what stands for a message
    marked = notice or "\u200e" in message  # `Report.pdf \u200e• \u200e3 pages \u200edocument omitted`
    message = message.translate(_INVISIBLE).strip()
    if notice and "end-to-end encrypt" in message:
        return "drop", None, ""
    if message.startswith(_POLL):  # a poll's question and options follow on lines of their own
        return "poll", name, ""
    if _omitted(message) or (marked and message.casefold().endswith(" omitted")):
        return "chat", name, ""
    if notice:
        return "system", None, message
    if message.endswith(_EDITED):
        message = message[: -len(_EDITED)].rstrip()
    return "chat", name, message


def _stamped_sender(line: str, dated_only: bool = False) -> str | None:
    """The sender of a chat export's message behind a stamp (with a date, when `dated_only`); None when the
    line is no such message."""
    found = _stamp(line)
    if found is None or (dated_only and not found[1]):
        return None
    stamp, dated = found
    parsed = _stamped(line[stamp.end():], bare=not dated and not stamp.group(1))
    return parsed[1] if parsed is not None and parsed[0] in ("chat", "irc", "poll") else None


def _is_stamped_message(line: str) -> bool:
    return _stamped_sender(line) is not None


# weechat's log: date and time, the nick (or an arrow, a star for the client's own lines), the message, by tabs
_WEECHAT = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)\t([^\t]*)\t(.*)")
_WEECHAT_NOTICES = frozenset(("-->", "<--", "--", "*", "=!=", "-", "!", " *"))
_LOG_LEVELS = frozenset("INFO WARN WARNING ERROR DEBUG TRACE FATAL CRITICAL NOTICE".split())


def _weechat(raw: str) -> tuple[str, str | None, str] | None:
    """(date and time, nick or None for the client's own line, message) of a weechat log line; None if not one."""
    m = _WEECHAT.match(raw.strip("\r\n"))
    if m is None:
        return None
    nick, message = m.group(2).strip(), m.group(3).strip()
    if nick.upper() in _LOG_LEVELS:  # an application's log (`INFO`, `ERROR`), not a chat
        return None
    name = nick.lstrip("@+%~&")  # the channel mode sign goes
    if not name or nick in _WEECHAT_NOTICES or " " in nick or ":" in nick or "," in nick:
        return m.group(1), None, f"{nick} {message}".strip()
    return m.group(1), name, message


def dated_sender(line: str) -> str | None:
    """The sender of a chat export's message with a date and time before it (`12/31/23, 9:15 PM - Alex: hey`);
    None when the line is no such message."""
    if "\t" in line and (log := _weechat(line)) is not None:
        return log[1]
    line = line.strip().lstrip(_LEADING_INVISIBLE)
    return _stamped_sender(line, dated_only=True) if line[:1] in _STAMP_STARTS else None


CHAT_HEAD_LINES = 400  # the non-empty lines a file is judged by


def looks_like_chat_export(lines: Iterable[str]) -> bool:
    """Whether a text's first lines are a chat export with dates, not a script: at least two dated messages,
    more than the `Name: text` lines of a script. Those count only for names that recur and never send a
    dated message: a message's own lines (`Chips: 2 bags`, a list reposted under a sender's name) are not a
    script's, and a script's speakers come back."""
    senders, plain, stamped = set(), Counter(), 0
    lines = list(lines)
    copied = chatcopy.kind(lines)
    if copied is not None:  # messages copied from a chat app
        lines = list(chatcopy.lines_of(lines, copied))
    elif (exported := chatexports.kind(lines)) is not None:  # an app's own text export
        lines = list(chatexports.lines_of(lines, exported))
    for line in itertools.islice((x for x in lines if x.strip()), CHAT_HEAD_LINES):
        sender = dated_sender(line)
        if sender is not None:
            stamped += 1
            senders.add(sender.casefold())
        elif (hit := split_speaker(" ".join(line.split()))) is not None:
            plain[hit[0].casefold()] += 1
    script = sum(n for name, n in plain.items() if n > 1 and name not in senders)
    return stamped >= 2 and stamped > script


def _omitted(message: str) -> bool:
    """Whether a message is what an export writes for one it did not keep (a photo, a deleted message)."""
    m = message.casefold().rstrip(".")
    return (m in _OMITTED or m.startswith("<attached:") or m.endswith(_ATTACHED)
            or (m[:1] == "<" and m[-1:] == ">" and " " in m and len(m) <= 60 and "<" not in m[1:-1]
                and ">" not in m[1:-1] and any(w in m for w in _MEDIA_WORDS)))


def _zoom_sender(name: str) -> str:
    """The sender of Zoom's saved meeting chat (`From  Sarah Chen to Everyone`: Sarah Chen); any other name
    as it is."""
    zoom = _ZOOM_SENDER.fullmatch(name) if name[:5] == "From " else None
    return " ".join(zoom.group(1).split()) if zoom is not None else name


def _loose_speaker(text: str) -> tuple[str, str] | None:
    """A chat export's sender as it is saved: a phone number, a name with emoji or digits first."""
    m = _LOOSE_SENDER.match(text)
    if m is None or len(m.group(1).split()) > MAX_NAME_WORDS or any(c in m.group(1) for c in "\"[]<>"):
        return None
    return _zoom_sender(m.group(1).strip()), m.group(2)


def _cast_of(lines: Iterable[str]) -> set[str]:
    """A play's cast as far as these lines show it: the names that open a block (the first line after a
    blank line), and the names that stand alone on a line more than once (a play without blank lines)."""
    cast = set()
    alone = Counter()
    prev_blank = True
    for line in lines:
        stripped = line.strip()
        hit = split_speaker(stripped) if stripped else None
        if hit is not None:
            if prev_blank:
                cast.add(hit[0])
            elif not hit[1].strip():
                alone[hit[0]] += 1
        prev_blank = not stripped
    return cast | {name for name, n in alone.items() if n > 1}


def _is_cue(name: str, cast: set[str]) -> bool:
    """Inside a speech, does `name:` start the next speech? Yes for the cast and for capitals (`NURSE:`):
    a speech line like `Hear me speak:` or `Against him first: he's a very dog` is neither
    (tinyshakespeare has 970 such lines and none is either)."""
    return name in cast or (len(name) > 1 and name.isupper())


# A play's stage direction on its own line inside a speech block (`Exit ROMEO`, `Exeunt.`, `Enter NURSE and
# JULIET`, `Exit, pursued by a bear`): narration, not the speaker's words. A speech line such as `Enter the
# house` goes on (a lower-case word follows).
_STAGE_LINE = re.compile(r"(?:(?:Exit|Exeunt|Manet|Manent)[.,;:]|(?:Exit|Exeunt|Enter|Re-enter|Manet|Manent)"
                         r"(?:[ \t]+[A-Z(\[]|[ \t]*\.?$))")  # `Enter, sir;` is speech; `Exit, pursued ...` not


def _is_stage_line(text: str) -> bool:
    if text[:1] in "[(" and text[-1:] == ("]" if text[0] == "[" else ")"):  # `[Enter BOATSWAIN]`
        text = text[1:-1].strip()
    return text[:1] in "EMR" and _STAGE_LINE.match(text) is not None and text.count(" ") < 10


def _directed(block: str) -> bool:
    """Whether a block of a play is a direction in brackets alone."""
    return block[:1] in "[(" and block[-1:] in ")]" and len(block) <= 200


def _interjected(block: str) -> bool:
    """Whether a block of a play is a direction alone, one that does not take the speaker off the stage
    (or the scene to its end)."""
    return _directed(block) and not any(w.strip("_.,;:!?") in _GONE for w in block[1:-1].casefold().split())


# Words of a direction after which the speaker does not go on: they leave, die, or the scene changes.
_GONE = frozenset("exit exits exeunt enter enters goes go leaves leave dies die dead falls out off away curtain "
                  "scene end retires withdraws departs asleep alone".split())


def _parse_play(
    lines: Iterable[str], file: str, stats: ReadStats, compact: bool = False, cast: set[str] | None = None,
    spaced: bool = False,
) -> Iterator[Turn | None]:
    """Turns of a play: a block (to a blank line) opening with a cue is its speech. `spaced`: the play sets
    its cues in capitals between blank lines, so a cue alone (or with its direction only) before a blank
    line takes the next block as its speech; in a list of persons (three such cues with directions or
    more, one after the other, with no speech between them) none does, up to a cue without a direction or
    a heading."""
    cast = set() if cast is None else cast
    sightings: Counter = Counter()  # a play without blank lines: `Name:` alone seen, not yet taken as a cue
    speaker: str | None = None
    parts: list[str] = []
    start = 0
    in_block = False
    resumed = False  # the speech goes on after a direction inside it
    # A direction between blank lines inside a speech (`[_Lays down his mantle._]`): the block after it,
    # without a cue, is the same speaker's. `last_speech`: who spoke in the block just ended.
    last_speech: str | None = None
    resume_as: str | None = None
    cued: str | None = None  # a cue alone, its speech after the blank line below it
    cue_parts: list[str] = []  # and the direction it came with (`ALCESTE, assis.`)
    cued_start = 0  # its line
    silent = 0  # cues with directions in a row that said nothing: from two on, a list of persons
    cue_only = False  # the block so far is a cue with its direction alone
    n = 0
    for n, raw in enumerate(lines, 1):
        text = clean_text(raw, stats)
        if not text:
            if (spaced and in_block and speaker is not None and not resumed and speaker.isupper()
                    and all(_DIRECTION_ONLY.fullmatch(p) for p in parts)):
                # `HAMLET.` (or `ALCESTE, assis.`), a blank line, then the speech (a spaced Gutenberg play)
                cued, cue_parts, cued_start, in_block, speaker, parts = speaker, parts, start, False, None, []
                continue
            if in_block:
                if parts or not resumed:
                    yield Turn(speaker, "" if cue_only else " ".join(parts), file, start)
                if speaker is not None:
                    last_speech, resume_as = speaker, None
                else:
                    block = " ".join(parts)
                    # (there, `[_Exit Curio._]` inside a speech is someone else's going: the speech goes on)
                    goes_on = _interjected(block) or (spaced and _directed(block))
                    resume_as = last_speech if goes_on else None
                    last_speech = None
            in_block, speaker, parts, resumed = False, None, [], False
            continue
        scene_break = _SCENE_BREAK.fullmatch(text) is not None
        if scene_break or _is_stage_line(text):
            if in_block and (parts or (not resumed and scene_break)):
                yield Turn(speaker, "" if cue_only else " ".join(parts), file, start)
            # a direction inside a speech (`[Enter BOATSWAIN]`): the lines after it, to a blank line or a cue,
            # are the same speaker's, a turn of their own; none is no empty turn
            if in_block and speaker is not None and not scene_break:
                parts, start, resumed = [], n + 1, True
            else:
                in_block, speaker, parts, resumed = False, None, [], False
                last_speech = resume_as = None
            if cued is not None:  # a cue that said nothing before a scene break or a direction
                yield Turn(cued, "", file, cued_start)
                cued = None
            if scene_break:
                silent = 0
            yield BREAK if scene_break else Turn(None, text, file, n)
            continue
        hit = split_speaker(text)
        if hit is not None and cued is not None and not in_block and not hit[0].isupper():
            hit = None  # after `DUKE.` and a blank line: `Cesario: go to her, ...` is the duke's speech
        if in_block and hit is not None:
            # the next speech starts here: a cue (`JULIET: Anon!` after the nurse's line), or in a play
            # without blank lines a `Name:` alone in title case or met before in any casing (`Hear me
            # speak:` once is a line of verse: 3 of tinyshakespeare's 85 such lines are in title case;
            # `Second murderer:` after `Second Murderer:` is a cue). Inline, only the exact name: verse
            # lines such as `duke: and I believe ...` or `Come: let us go.` stay text.
            cue = _is_cue(hit[0], cast)
            if not cue and compact and not hit[1].strip():
                folded = hit[0].casefold()
                sightings[folded] += 1
                cue = (sightings[folded] > 1 or all(w[:1].isupper() for w in hit[0].split())
                       or any(c.casefold() == folded for c in cast))
            if cue:
                if parts or not resumed:
                    yield Turn(speaker, "" if cue_only else " ".join(parts), file, start)
                in_block, speaker, parts, resumed = False, None, [], False
        if not in_block:
            if cued is not None and (hit is not None or _SECTION.match(text)):
                # a cue that said nothing (its direction alone is no speech); cue after cue with
                # directions is a list of persons (`HORATIO, friend to Hamlet.`), to a plain cue
                silent = silent + 1 if hit is not None and cue_parts and hit[0] != cued else 0
                yield Turn(cued, "", file, cued_start)
                cued = None
            if (hit is not None and not hit[1].strip()) or _SECTION.match(text):
                silent = 0
            in_block, start = True, n
            if hit is not None:  # the speech starts on the speaker line, or on the next one
                speaker = hit[0]
                cast.add(speaker)
                text = hit[1].strip()
                if not text:
                    continue
                # a cue with its direction and no speech (`HARPAGON, seul.`, a list of persons' `ROMEO, son
                # to Montague.`): an empty turn, not a reply that is a direction
                cue_only = _DIRECTION_ONLY.fullmatch(text) is not None
                parts.append(text)
                continue
            elif cued is not None and text.isupper():  # `SONG.`, `LETTER.` after a cue: a heading, no speech
                yield Turn(cued, "", file, cued_start)
            elif cued is not None and not (silent >= 2 and cue_parts):
                speaker, text, silent = cued, " ".join([*cue_parts, text]), 0  # after its direction, if any
            elif cued is not None:
                yield Turn(cued, "", file, cued_start)  # the last of a list of persons: what follows is not its
            elif resume_as is not None and text[:1] not in "[(" and not _SECTION.match(text) and not text.isupper():
                speaker = resume_as
            resume_as = cued = None
        parts.append(text)
        cue_only = False
    if in_block and (parts or not resumed):
        yield Turn(speaker, "" if cue_only else " ".join(parts), file, start)
    elif cued is not None:
        yield Turn(cued, "", file, cued_start)
    stats.lines += n


# ---------------------------------------------------------------------------------------------- files


def check_text_file(path: str | os.PathLike, what: str = "--txtfilename") -> Path:
    """The input file exists, is a file, is not empty and not binary; else a UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file ({what})")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a text file ({what})")
    if not path.is_file():  # a pipe or a device: the input is read more than once (layout, source)
        raise UserError(f"{path}: not a regular file (a pipe or a device): save the dialogue to a file first ({what})")
    try:
        with open(path, "rb") as f:
            head = f.read(BINARY_SNIFF)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    blank = b" \t\r\n\xef\xbb\xbf"  # whitespace and a UTF-8 byte-order mark
    if not head.strip(blank):
        # maybe only whitespace in the first block: check the whole file before calling it empty
        with open(path, "rb") as f:
            if not any(chunk.strip(blank) for chunk in iter(lambda: f.read(1 << 20), b"")):
                raise UserError(f"{path}: the file is empty")
    if b"\x00" in head and not is_utf16(head) and not _nul_padded(path, head):
        if _looks_like_utf16(head):  # Windows tools' "Unicode" saved without its byte-order mark
            raise UserError(f"{path}: looks like UTF-16 text without a byte-order mark: save it as UTF-8 "
                            "(or as UTF-16 with one)")
        raise UserError(f"{path}: looks like a binary file, expected text")
    return path


def _nul_padded(path: Path, head: bytes) -> bool:
    """Text whose only NULs are a run at its end (a log cut off by a crash, its file padded to the block)."""
    end = head.rstrip(b"\x00")
    if b"\x00" in end or len(end) == len(head) or not end.strip():
        return False
    with open(path, "rb") as f:
        f.seek(len(head))
        return not f.read(1 << 20).strip(b"\x00")  # nothing but NULs after it


def _looks_like_utf16(head: bytes) -> bool:
    """Every other byte NUL (ASCII-range text in UTF-16), on the even or the odd positions."""
    pairs = len(head) // 2
    if pairs < 4:
        return False
    return any(head[k::2][:pairs].count(0) >= 0.9 * pairs and head[1 - k::2][:pairs].count(0) <= 0.1 * pairs
               for k in (0, 1))


def open_text(path: str | os.PathLike, stats: ReadStats | None = None):
    """Open for reading lines: UTF-8 with or without BOM (UTF-16 with BOM too), any newline convention;
    undecodable bytes arrive as lone surrogates that `clean_text` replaces and counts. A file in a legacy
    code page (legacy_encoding) is read in it, and `stats.encodings` says so."""
    with open(path, "rb") as f:
        head = f.read(ENCODING_SNIFF)
    if is_utf16(head):
        # surrogateescape cannot stand in for UTF-16's bad units (an unpaired surrogate, an odd last
        # byte): each becomes U+DCFF, which clean_text replaces and counts like an undecodable UTF-8 byte
        codecs.register_error("dialogue_lora.escape", _escape_utf16)
        return open(path, encoding="utf-16", errors="dialogue_lora.escape", newline=None)
    legacy = legacy_encoding(head)
    if legacy is not None:
        if stats is not None:
            stats.encodings[Path(path).name] = legacy
        return open(path, encoding=legacy, errors="surrogateescape", newline=None)
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None)


ENCODING_SNIFF = 1 << 20


def legacy_encoding(head: bytes) -> str | None:
    """The code page a file that is not UTF-8 was written in, judged by its first bytes `head`; None for
    UTF-8. Windows' "ANSI" files (Notepad before 2019, Excel's "CSV (Comma delimited)") hold bytes that are
    not UTF-8 and few UTF-8 letters; a UTF-8 file with a few broken bytes has more good letters than bad bytes
    and stays UTF-8 (the bad bytes replaced and counted). Which code page: see _code_page."""
    text = head.decode("utf-8", "surrogateescape")
    bad = len(_ESCAPED.findall(text))
    if not bad or bad <= sum(1 for c in text if "\x7f" < c < "\ud800" or c > "\udfff"):
        return None
    return _code_page(head)


# The letters beyond ASCII of the languages each Latin-script Windows code page serves
_LATIN_LETTERS = {
    "cp1252": "àâäáãåæçèéêëìíîïñòóôõöøùúûüýÿœßÀÂÄÁÃÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŸŒ",  # Western Europe
    "cp1250": "ąćęłńóśźżĄĆĘŁŃÓŚŹŻčďěňřšťůžýáéíóúČĎĚŇŘŠŤŮŽÝÁÉÍÓÚőűŐŰöüÖÜäôÄÔĺľŕĹĽŔđĐăâîşţĂÂÎŞŢ",  # Central
    "cp1254": "çğıöşüÇĞİÖŞÜâîûÂÎÛ",  # Turkish
    "cp1257": "ąčęėįšųūžĄČĘĖĮŠŲŪŽāēģīķļņōŗĀĒĢĪĶĻŅŌŖõäöüÕÄÖÜ",  # Baltic
}
# The most frequent letters of Russian (Ukrainian...) and Greek: about half of what such a text holds. KOI8
# (old Unix and e-mail Russian) has Cyrillic's letters at other bytes, with mostly capitals where 1251 has
# small letters: the frequent ones come out of one reading only. KOI8-U reads KOI8-R's letters the same and
# Ukrainian's і ї є ґ too (KOI8-R has box-drawing pieces there)
_FREQUENT_LETTERS = {"cp1251": "оеаинтсрвлОЕАИНТСРВЛ", "koi8_u": "оеаинтсрвліОЕАИНТСРВЛІ", "cp1253": "αοιετσνηυρςάέίόύήώΑΟΙΕΤΣΝΗΥΡ"}
# Punctuation every code page has (curly quotes, dashes): no evidence either way
_TYPOGRAPHY = frozenset("“”‘’‚„–—…«»°€•·×©®™§¶¡¿\u00a0")
_KANA = re.compile("[\u3040-\u30ff]")
_HANGUL = re.compile("[\uac00-\ud7af]")
_HAN = re.compile("[\u4e00-\u9fff]")
_ARABIC = re.compile("[\u0621-\u063a\u0641-\u064a\u067e\u0686\u0698\u06af]")  # and Persian's letters
_HEBREW = re.compile("[\u05d0-\u05ea]")  # letters, not points (a Russian text's capitals would be points)
_CJK_PUNCTUATION = re.compile("[\u3000-\u303f\uff01-\uff65]")  # 。「」【】 and full-width ！，：？（）: no script's
_BOX_DRAWING = re.compile("[\u2500-\u25ff]")  # KOI8's bytes where 1251 has Serbian's Ђ џ љ: no text's


def _code_page(head: bytes) -> str:
    """Which Windows code page `head` reads best in. A Latin-script text (letters beyond ASCII a minority:
    the accents) in the one whose accented letters its bytes give (Western Europe's among equals); else
    Japanese if kana come out, Korean if Hangul does, Arabic if its letters do (and a Russian or Greek
    reading has no words of its own), Russian or Greek if their most frequent letters do, Chinese if its
    characters do, Hebrew if its letters do; Western Europe's when nothing fits."""
    letters = [c for c in head.decode("cp1252", "replace") if c.isalpha()]
    if sum(c > "\x7f" for c in letters) <= 0.4 * len(letters):
        def fit(cp: str) -> float:
            high = [c for c in head.decode(cp, "replace") if c > "\x7f" and c not in _TYPOGRAPHY]
            return sum(c in _LATIN_LETTERS[cp] for c in high) / len(high) if high else 1.0

        fits = {cp: fit(cp) for cp in _LATIN_LETTERS}
        best = max(fits, key=fits.get)
        # Turkish's ş ğ Ş Ğ are Romanian's ţ Ţ and Croatian's đ Đ in Central Europe's page, a tie; its ı and İ,
        # frequent in Turkish, are Czech's ý Ý there, but a Czech text has other letters that break the tie
        if best == "cp1250" and fits["cp1254"] == fits["cp1250"] and (b"\xfd" in head or b"\xdd" in head):
            return "cp1254"
        return best

    def share(cp: str, script: re.Pattern | None) -> float:
        """Of the characters beyond ASCII `head` gives in `cp`, the share in `script` (None: frequent letters)."""
        try:
            text = head.decode(cp, "replace" if script is None else "strict")
        except UnicodeDecodeError:
            return 0.0
        high = [c for c in text if c > "\x7f" and c not in _TYPOGRAPHY and (
            c.isalpha() or _BOX_DRAWING.match(c) if script is None else not _CJK_PUNCTUATION.match(c))]
        if not high:
            return 0.0
        if script is None:
            return sum(c in _FREQUENT_LETTERS[cp] for c in high) / len(high)
        return sum(bool(script.match(c)) for c in high) / len(high)

    if share("cp932", _KANA) >= 0.3:
        return "cp932"
    if share("cp949", _HANGUL) >= 0.8:
        return "cp949"
    # KOI8, judged on a text of some length only: a line or two of Arabic can read as plain Russian by chance
    # (`هههه`, laughter, is `ЕЕЕЕ`), KOI8's small letters being Arabic letters in Arabic's page
    long_enough = sum(b >= 0x80 for b in head[:4096]) >= 40
    frequent = {cp: share(cp, None) for cp in _FREQUENT_LETTERS  # each a decode of up to a megabyte: once
                if cp != "koi8_u" or long_enough}
    # KOI8 Russian read as Greek gives Greek's frequent letters too, but in words like `ΛΑΛ ΤΩ πΙΧ`
    plausible = {cp: f for cp, f in frequent.items() if _mixed_case(head[:65536].decode(cp, "replace")) < 0.2} \
        if long_enough else frequent
    best = max(plausible or frequent, key=(plausible or frequent).get)
    # An Arabic text gives Greek's frequent letters too (0.67 of them in a short one), in capitals and small
    # letters at random ("ΓΝγΟ"); a Russian or Greek one in capitals reads as Arabic letters in Arabic's page;
    # a plain KOI8 reading with its frequent letters wins
    if share("cp1256", _ARABIC) >= 0.8 and not (best == "koi8_u" and best in plausible and frequent[best] >= 0.45) and (
            frequent[best] < 0.6 or _mixed_case(head.decode(best, "replace")) >= 0.2):
        return "cp1256"
    if frequent[best] >= 0.6:
        return best
    for cp in ("gb18030", "big5"):
        if share(cp, _HAN) >= 0.8:
            return cp
    if share("cp1255", _HEBREW) >= 0.8:  # after Russian: its lower case reads as Hebrew letters here
        return "cp1255"
    return best if frequent[best] >= 0.45 else "cp1252"


def _mixed_case(text: str) -> float:
    """The share of `text`'s words with a capital after a small letter (`ΓΝγΟ`): what a text read in a
    code page not its own gives, and a language's own words rarely have."""
    words = [w for w in re.findall(r"[^\W\d_]{2,}", text) if not w.isascii()]  # not `iPhone`, `YouTube`
    if not words:
        return 0.0
    return sum(any(a.islower() and b.isupper() for a, b in zip(w, w[1:])) for w in words) / len(words)


def _escape_utf16(error: UnicodeDecodeError) -> tuple[str, int]:
    return "\udcff", error.end


def iter_text_turns(
    path: str | os.PathLike, layout: str = "auto", stats: ReadStats | None = None, stamps: dict | None = None
) -> Iterator[Turn | None]:
    """Turns of a text file, streamed line by line."""
    path = check_text_file(path)
    stats = stats if stats is not None else ReadStats()
    with open_text(path, stats) as f:
        head = f.read(4096)
        f.seek(0)
        if not webpage.is_page(path.name, head):
            yield from parse_lines(f, path.name, layout, stats, stamps)
            return
        page = f.read()
    stats.add_note(f"{path.name}: a web page: its text read, the markup, scripts and menus left out (line "
                   "numbers are the text's)", hint=True)
    yield from parse_lines(webpage.lines(page, lambda line: split_speaker(line) is not None), path.name, layout,
                           stats, stamps)
