"""Chat apps' own text exports that write a message otherwise than WhatsApp does -> a chat log's lines.

A pre-pass for the text reader, as chatcopy.py is for copied chats: one output line per input line (an
empty one in place of what is left out), so that line numbers stay the file's. Pure: no I/O. Each message
becomes a line as a WhatsApp export writes it (`[2024-01-15 21:00] Mira: Is that the draft cover?`: the
date year first where the app names its month or writes the year first; LINE's `01/15/2024` as it is,
for the chat reader's day-or-month reading of the whole file), and the chat reader takes it from there (a silence ends a
conversation, one person's messages in a row are one turn, the filters apply); a message's further lines
follow as they are. The exports:

    2024/01/15(Mon)                         LINE's "Save chat" (.txt): a date line for each day, then
    21:00<TAB>Alex<TAB>Hey, are you up?     a time, the sender and the words, tab-separated; a message
                                            of several lines in "quotes"; `Mon, 01/15/2024` and
                                            `09:00PM` in the English Android app's
    --------------- 2024년 1월 15일 월요일 ---   KakaoTalk on a PC: `[준호] [오후 9:00] 아직 안 자?`; on a phone
    2024. 1. 15. 오후 9:00, 준호 : 아직 안 자?    `January 15, 2024, 9:00 PM, Alex : Hey` (Android, English)
    Jan 15, 2024  9:00:00 PM                imessage-exporter's .txt: the date, the sender on the next
    Mira                                    line, the words below, a blank line after the message
    Is that the draft cover?
    2024-01-15 21:00:00 小明                  WeChatMsg (留痕): the date and the sender, the words below
    你还没睡吗？
    [2024-01-15 21:03:00] Mira: Hi          signal-export's chat.md: dated lines as the chat reader
    (- Me: ❤️ -)                            reads them, with its marks: a reaction, a sticker `(( 😂 ))`,
                                            an image `![IMG_0421.jpg](./media/IMG_0421.jpg)`, a quote
                                            `> ...` of the message answered

Their media placeholders (`[Sticker]`, `[写真]`, `사진`, `[图片]`, an attachment's path) become WhatsApp's
`<Media omitted>`, which the chat reader counts as attachment_only; notices (`Alex unsent a message.`,
`"小明" 撤回了一条消息`, `민지님이 나갔습니다.`) become dated lines without a sender, system messages; the
export's own header (`[LINE] Chat history with Mira`, `Saved on: ...`, `저장한 날짜 : ...`), its date lines,
imessage-exporter's tapbacks and reply notes, and WeChatMsg's quotes of the message answered are left out.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

MEDIA = "<Media omitted>"
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}


def _hour24(hour: str, minute: str, half: str | None) -> str:
    """`21:05` from a 12-hour time (`9`, `05`, `PM` or Korean `오후`), or a 24-hour one as it is."""
    h = int(hour)
    if half:
        pm = half.upper().startswith("P") or half in ("오후", "下午", "午後")
        h = h % 12 + (12 if pm else 0)
    return f"{h:02d}:{minute}"


def _iso(year: str | int, month: str | int, day: str | int) -> str:
    return f"{int(year):04d}-{int(month):02d}-{int(day):02d}"


def _month(word: str) -> int | None:
    return _MONTHS.get(word[:3].casefold())


# -------------------------------------------------------------------------------------------------- LINE

_LINE_HEADER = re.compile(r"\[LINE\][ \t].*|(?:Saved on|保存日時|儲存日期|保存日期|保存时间|บันทึกเมื่อ)[ \t]*[:：].*")
# `2024/01/15(Mon)`, `2024/01/15（月）`, `2024.01.15 月曜日`, `Mon, 01/15/2024`, `Sun, 26/04/2026`
_LINE_DAY = re.compile(r"(?P<wd>[^\W\d_]{2,9},[ \t]*)?(?P<day>\d{4}[/.]\d{1,2}[/.]\d{1,2}|\d{1,2}/\d{1,2}/\d{4})"
                       r"(?:(?P<wd2>[ \t]*[(（][^)）\n]{1,12}[)）]|[^\W\d_]{1,3})|[ \t]+[^\W\d_]{1,12})?")  # `2026/1/30周五`
_LINE_MESSAGE = re.compile(r"(?P<pre>上午|下午|午前|午後)?(?P<time>\d{1,2}:\d{2})[ \t]?(?P<half>[AaPp][Mm])?\t"
                           r"(?:(?P<name>[^\t]{1,60})\t)?(?P<text>.*)")
_LINE_MEDIA = re.compile(r"\[[^\[\]\n]{1,24}\]")  # `[Sticker]`, `[Photo]`, `[スタンプ]`, `[写真]`, `[貼圖]`
_UNSENT = re.compile(r".{1,60} unsent a message\.?|.{0,60}メッセージの送信を取り消しました|.{0,60}已收回訊息")


def _line(lines: Iterable[str]) -> Iterator[str]:
    day = None
    quoted = False  # inside a message of several lines, written in quotes (its own quotes doubled)
    for raw in lines:
        line = raw.rstrip("\r\n")
        s = line.strip()
        m = _LINE_MESSAGE.fullmatch(line)
        if quoted and not (_LINE_DAY.fullmatch(s) or (m is not None and m.group("name"))):
            if line.endswith('"') and (len(line) - len(line.rstrip('"'))) % 2:  # the closing quote
                line, quoted = line[:-1], False
            yield line.replace('""', '"')
            continue
        quoted = False  # (a quote never closed: the next message or day begins anyway)
        if day is None and _LINE_HEADER.fullmatch(s):
            yield ""
            continue
        if (d := _LINE_DAY.fullmatch(s)) is not None:
            day = d.group("day")
            yield ""
            continue
        if m is None or day is None:
            yield line
            continue
        stamp = f"[{day} {_hour24(*m.group('time').split(':'), m.group('half') or m.group('pre'))}]"
        text = m.group("text")
        if text.startswith('"') and text.count('"') % 2:  # `"Honestly I cried.` (not `"Dune" was great`)
            text, quoted = text[1:].replace('""', '"'), True
        name = m.group("name")
        if name is None or _UNSENT.fullmatch(text.strip()):
            yield f"{stamp} {text}"  # a notice: no one's words
        elif _LINE_MEDIA.fullmatch(text.strip()):
            yield f"{stamp} {name}: {MEDIA}"
        else:
            yield f"{stamp} {name}: {text}"


def _is_line(head: list[str]) -> bool:
    """LINE's header (`[LINE] Chat history with Mira`, `Saved on: ...`), a day's line and three messages: a
    schedule's tab-separated rows under a date are no chat."""
    header = any(_LINE_HEADER.fullmatch(s.strip()) for s in head[:5])  # (a schedule has none)
    days = sum(1 for s in head if _LINE_DAY.fullmatch(s.strip()))
    said = sum(1 for s in head if (m := _LINE_MESSAGE.fullmatch(s.rstrip("\r\n"))) and m.group("name"))
    return header and days >= 1 and said >= 3


# --------------------------------------------------------------------------------------------- KakaoTalk

_HALF = r"(?:오전|오후)"
_KAKAO_HEADER = re.compile(r".{1,60} 님과 카카오톡 대화|KakaoTalk Chats with .{1,60}|Talk_[\d.]+ [\d:]+-\d+\.txt|"
                           r"(?:저장한 날짜|Date Saved)[ \t]*:.*")
# a day: `2024년 1월 15일 월요일`, `Monday, January 15, 2024` (between dashes on a PC), a phone's
# `2024년 1월 15일 오후 9:00` or `January 15, 2024, 9:00 PM` alone
_KAKAO_KO_DATE = r"(?P<y>\d{4})년 (?P<mo>\d{1,2})월 (?P<d>\d{1,2})일"
_KAKAO_DOT_DATE = r"(?P<y2>\d{4})\. ?(?P<mo2>\d{1,2})\. ?(?P<d2>\d{1,2})\."
_KAKAO_EN_DATE = r"(?P<mon>[A-Z][a-z]{2,8}) (?P<d3>\d{1,2}), (?P<y3>\d{4})"
_KAKAO_DATE = rf"(?:{_KAKAO_KO_DATE}|{_KAKAO_DOT_DATE}|{_KAKAO_EN_DATE})"
_KAKAO_TIME = rf"(?:(?P<half>{_HALF}) (?P<h>\d{{1,2}}):(?P<mi>\d{{2}})|(?P<h2>\d{{1,2}}):(?P<mi2>\d{{2}})(?: ?(?P<half2>[AP]M))?)"
_KAKAO_DATE_IN = re.compile(_KAKAO_DATE)
_BARE_DATE, _BARE_TIME = (re.sub(r"\?P<\w+>", "", p) for p in (_KAKAO_DATE, _KAKAO_TIME))  # (said thrice below)
_KAKAO_DAY = re.compile(rf"-{{3,}} (?:[A-Z][a-z]+, )?{_BARE_DATE}(?: [^\W\d_]{{1,4}})? -{{3,}}|"
                        rf"(?:[A-Z][a-z]+, )?{_BARE_DATE}(?: [^\W\d_]{{1,2}}요일)?|{_BARE_DATE},? {_BARE_TIME}")
_KAKAO_PC = re.compile(rf"\[(?P<name>[^\[\]\n]{{1,40}})\] \[{_KAKAO_TIME}\] (?P<text>.*)")
_KAKAO_PHONE = re.compile(rf"{_KAKAO_DATE},? {_KAKAO_TIME}, (?P<name>[^\n]{{1,40}}?) : (?P<text>.*)")
_KAKAO_TIMED = re.compile(rf"{_KAKAO_TIME}, (?P<name>[^\n]{{1,40}}?) : (?P<text>.*)")  # under a day's lines
_KAKAO_RULE = re.compile(r"-{10,}")  # the rules around a day's line
_KAKAO_MEDIA = frozenset(("사진", "동영상", "이모티콘", "음성메시지", "파일", "Photo", "Video", "Emoticon",
                          "Voice Note", "File", "삭제된 메시지입니다.", "This message has been deleted."))
_KAKAO_PHOTOS = re.compile(r"사진 \d+장|\d+ Photos")
_KAKAO_NOTICE = re.compile(r".{1,40}님이 (?:들어왔습니다|나갔습니다|.{1,40}님을 초대하였습니다|.{1,40}님을 초대했습니다)\.|"
                           r".{1,40} (?:joined|left) this chatroom\.")


def _kakao_date(m: re.Match) -> str | None:
    g = m.groupdict()
    if g.get("y"):
        return _iso(g["y"], g["mo"], g["d"])
    if g.get("y2"):
        return _iso(g["y2"], g["mo2"], g["d2"])
    month = _month(g["mon"])
    return _iso(g["y3"], month, g["d3"]) if month else None  # (not a month's name: no date)


def _kakao_time(m: re.Match) -> str:
    g = m.groupdict()
    if g.get("h"):
        return _hour24(g["h"], g["mi"], g["half"])
    return _hour24(g["h2"], g["mi2"], g["half2"])


def _kakao(lines: Iterable[str]) -> Iterator[str]:
    day = None
    started = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        s = line.strip()
        if not started and _KAKAO_HEADER.fullmatch(s):
            yield ""
            continue
        if _KAKAO_DAY.fullmatch(s) is not None and (d := _kakao_date(_KAKAO_DATE_IN.search(s))) is not None:
            day, started = d, True
            yield ""
            continue
        if _KAKAO_RULE.fullmatch(s):
            yield ""
            continue
        m = _KAKAO_PHONE.fullmatch(s)
        if m is not None and (d := _kakao_date(m)) is not None:
            day = d
        else:
            m = (_KAKAO_PC.fullmatch(s) or _KAKAO_TIMED.fullmatch(s)) if day is not None else None
        if m is None:
            yield "" if _KAKAO_NOTICE.fullmatch(s) else line
            continue
        started = True
        text = m.group("text")
        if text.strip() in _KAKAO_MEDIA or _KAKAO_PHOTOS.fullmatch(text.strip()):
            text = MEDIA
        yield f"[{day} {_kakao_time(m)}] {m.group('name').strip()}: {text}"


def _is_kakao(head: list[str]) -> bool:
    phone = sum(1 for s in head if _KAKAO_PHONE.fullmatch(s.strip()))
    pc = sum(1 for s in head if _KAKAO_PC.fullmatch(s.strip()) or _KAKAO_TIMED.fullmatch(s.strip()))
    days = sum(1 for s in head if _KAKAO_DAY.fullmatch(s.strip()))
    return phone >= 3 or (pc >= 3 and days >= 1)


# --------------------------------------------------------------------------------------- imessage-exporter

# `Jan 15, 2024  9:00:00 PM`, then ` (Read by them after 1 minute)`, or a notice on the same line
_IMESSAGE_DATE = re.compile(r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?P<d>\d{2}), (?P<y>\d{4}) "
                            r"{1,2}(?P<h>\d{1,2}):(?P<mi>\d{2}):\d{2} (?P<half>AM|PM)(?P<rest>.*)")
_IMESSAGE_NOTES = ("This message responded to an earlier message.", "Tapbacks:", "Reactions:", "Sent with ",
                   "Edited ", "This message was unsent", "Sticker from ", "Expressive: ")
_ATTACHMENT = re.compile(r"(?:/|~/|[A-Za-z]:\\|attachments/)\S*\.[A-Za-z0-9]{2,5}|"
                         r"(?:Attachment missing|No path provided)!?|\S+\.(?:heic|jpe?g|png|gif|mov|mp4|caf|m4a|pdf)",
                         re.IGNORECASE)


def _imessage(lines: Iterable[str]) -> Iterator[str]:
    stamp = None  # the message's date, until its first line of words
    sender = None
    expect_sender = False
    in_tapbacks = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        s = line.strip()
        m = _IMESSAGE_DATE.fullmatch(s)
        if m is not None:
            stamp = f"[{_iso(m.group('y'), _month(m.group('mon')), m.group('d'))} " \
                    f"{_hour24(m.group('h'), m.group('mi'), m.group('half'))}]"
            rest = m.group("rest").strip()
            in_tapbacks = False
            if rest and not rest.startswith("("):  # a notice: `Me named the conversation Dinner`
                yield f"{stamp} {rest}"
                stamp, expect_sender = None, False
            else:
                expect_sender = True
                yield ""
            continue
        if expect_sender:
            sender, expect_sender = s, False
            yield ""
            continue
        if not s:
            in_tapbacks = False
            yield ""
            continue
        if in_tapbacks or (stamp is None and s.startswith(_IMESSAGE_NOTES)):  # after the words: notes
            in_tapbacks = in_tapbacks or s in ("Tapbacks:", "Reactions:")
            yield ""
            continue
        if stamp is not None and sender:
            text = MEDIA if _ATTACHMENT.fullmatch(s) else s
            yield f"{stamp} {sender}: {text}"
            stamp = None
        elif _ATTACHMENT.fullmatch(s):
            yield ""
        else:
            yield line


def _is_imessage(head: list[str]) -> bool:
    return sum(1 for a, b in zip(head, head[1:]) if _IMESSAGE_DATE.fullmatch(a.strip()) and b.strip()) >= 3


# --------------------------------------------------------------------------------------- WeChatMsg (留痕)

# the sender: no colon (`2024-01-15 21:00:00 Alice: hi` is a chat log's line), and no log's level
_WECHAT_HEADER = re.compile(r"(?P<day>\d{4}-\d{2}-\d{2}) (?P<time>\d{2}:\d{2}):\d{2} (?P<name>[^\s:：][^:：\n]{0,30}?)")
_LOG_LEVELS = frozenset("INFO WARN WARNING ERROR DEBUG TRACE FATAL CRITICAL NOTICE SEVERE FINE".split())
_WECHAT_MEDIA = re.compile(r"\[(?:图片|语音|视频|文件|表情包|动画表情|位置|名片|链接|音乐|小程序|转账|红包|"
                           r"Image|Voice|Video|File|Sticker|Emoji)\]")
_WECHAT_NOTICE = re.compile(r"(?:\"[^\"]{1,40}\"|你) ?撤回了一条消息|.{1,60}(?:加入了群聊|邀请.{1,60}加入了群聊|拍了拍.{0,60})")


def _wechat(lines: Iterable[str]) -> Iterator[str]:
    held: tuple[str, str, str] | None = None  # a header whose words are on the next line: (day, time, name)
    speaking = False  # inside a message's words
    for raw in lines:
        line = raw.rstrip("\r\n")
        s = line.strip()
        m = _WECHAT_HEADER.fullmatch(s)
        if m is not None:  # (a header held before this one had no words: nothing of it is said)
            held, speaking = (m.group("day"), m.group("time"), m.group("name")), False
            if _WECHAT_NOTICE.fullmatch(m.group("name")):
                yield f"[{m.group('day')} {m.group('time')}] {m.group('name')}"
                held = None
            else:
                yield ""
            continue
        if s.startswith(("引用:", "引用：")) and speaking:  # the message it answers, quoted
            yield ""
            continue
        if held is not None and s:
            day, time, name = held
            held, speaking = None, True
            if _WECHAT_NOTICE.fullmatch(s):  # a notice written under a sender's header: no one's words
                yield f"[{day} {time}] {s}"
            else:
                yield f"[{day} {time}] {name}: {MEDIA if _WECHAT_MEDIA.fullmatch(s) else s}"
            continue
        if not s:
            speaking = False
        yield line


def _is_wechat(head: list[str]) -> bool:
    """Three headers or more, each after a blank line (or first) with words under it, of senders who come
    back and take turns (twice or more), and are no log's levels (`2024-01-15 21:00:00 INFO`; a report's
    `nightly backup` three times, then `restore test`)."""
    names = [m.group("name") for before, a, b in zip([""] + head, head, head[1:])
             if not before.strip() and (m := _WECHAT_HEADER.fullmatch(a.strip())) is not None and b.strip()
             and _WECHAT_HEADER.fullmatch(b.strip()) is None and m.group("name").upper() not in _LOG_LEVELS]
    turns = sum(1 for a, b in zip(names, names[1:]) if a != b)  # a chat's senders take turns; a report's do not
    return len(names) >= 3 and len(set(names)) < len(names) and turns >= 2


# ------------------------------------------------------------------------------------ signal-export (.md)

_SIGNAL_MESSAGE = re.compile(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?\] [^:\n]{1,60}: ?(?P<text>.*)")
_SIGNAL_MARK = re.compile(r"\(- .{1,60}: .{1,16} -\)|\(\( .{1,16} \)\)")  # a reaction, a sticker
_SIGNAL_MEDIA = re.compile(r"!?\[[^\[\]\n]*\]\((?:\./)?media/[^)\n]+\)")  # (no `[` inside: linear)
_SIGNAL_NOTICE = re.compile(r"(?:Incoming|Outgoing|Missed) (?:voice |video )?call.*|\(This message was deleted\)")


def _signal(lines: Iterable[str]) -> Iterator[str]:
    for raw in lines:
        line = raw.rstrip("\r\n")
        s = line.strip()
        m = _SIGNAL_MESSAGE.fullmatch(s)
        if m is not None:
            text = m.group("text").strip()
            head = s[: m.start("text")].rstrip()
            text = " ".join(_SIGNAL_MEDIA.sub(" ", text).split()) if "](" in text else text  # attachments
            if (not text and "](" in m.group("text")) or text == "(This message was deleted)" or _SIGNAL_MARK.fullmatch(text):
                yield f"{head} {MEDIA}"
            elif _SIGNAL_NOTICE.fullmatch(text):
                yield head[: head.index("]") + 1] + " " + text  # a call: no one's words
            else:
                yield f"{head} {text}".rstrip()
        elif _SIGNAL_MARK.fullmatch(s) or _SIGNAL_MEDIA.fullmatch(s) or s.startswith(">"):
            yield ""  # a reaction, a sticker, an image, the quote of the message answered
        else:
            yield line


def _is_signal(head: list[str]) -> bool:
    said = sum(1 for s in head if _SIGNAL_MESSAGE.fullmatch(s.strip()))
    marks = sum(1 for s in head if _SIGNAL_MARK.fullmatch(s.strip()) or _SIGNAL_MEDIA.search(s))
    return said >= 2 and marks >= 1


# ---------------------------------------------------------------------------------------------- the kinds

_KINDS = {"LINE": (_is_line, _line), "KakaoTalk": (_is_kakao, _kakao), "imessage-exporter": (_is_imessage, _imessage),
          "WeChatMsg": (_is_wechat, _wechat), "signal-export": (_is_signal, _signal)}


def kind(head: list[str]) -> str | None:
    """Which app's export a text's first lines are, or None."""
    return next((name for name, (test, _) in _KINDS.items() if test(head)), None)


def lines_of(lines: Iterable[str], app: str) -> Iterator[str]:
    """The export as a chat log's lines, one output line per input line; `app` as `kind` gives it."""
    return _KINDS[app][1](lines)
