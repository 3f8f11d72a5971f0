"""Chat apps' own text exports (LINE, KakaoTalk, imessage-exporter, WeChatMsg) read as chats."""
from __future__ import annotations

import json

import pytest

from extensions.dialogue_lora import chatexports
from extensions.dialogue_lora.prepare import PrepareConfig, prepare
from extensions.dialogue_lora.sources import detect_source

LINE = ("[LINE] Chat history with Mira\nSaved on: 2024/01/16 10:30\n\n2024/01/15(Mon)\n"
        "21:00\tAlex\tHey, are you still up?\n21:01\tMira\tYeah, just finished the chapter\n21:01\tMira\t[Sticker]\n"
        "21:02\tAlex\tAnd? What did you think?\n21:03\tMira\t\"Honestly I cried.\nThe \"\"lighthouse\"\" got me.\"\n"
        "21:08\tAlex unsent a message.\n\n2024/01/16(Tue)\n09:00\tAlex\tGood morning\n09:01\tMira\tMorning!\n")
LINE_ANDROID = ("[LINE] Chat history with Mira\nSaved on: 01/16/2024, 10:30AM\n\nMon, 01/15/2024\n"
                "09:00PM\tAlex\tHey, are you still up?\n09:01PM\tMira\tYeah, just finished the chapter\n"
                "09:02PM\tAlex\tAnd? What did you think?\n09:03PM\tMira\tI cried.\n")
KAKAO_PC = ("민지 님과 카카오톡 대화\n저장한 날짜 : 2024-01-16 10:44:52\n\n"
            "--------------- 2024년 1월 15일 월요일 ---------------\n"
            "[준호] [오후 9:00] 아직 안 자?\n[민지] [오후 9:01] 응 방금 다 읽었어\n[민지] [오후 9:01] 이모티콘\n"
            "[준호] [오후 9:02] 결말 어땠어?\n[민지] [오후 9:03] 솔직히 울었어.\n등대 부분에서.\n민지님이 나갔습니다.\n")
KAKAO_PHONE = ("KakaoTalk Chats with Mira\nDate Saved : January 16, 2024, 10:44 AM\n\n\nJanuary 15, 2024, 9:00 PM\n"
               "January 15, 2024, 9:00 PM, Alex : Hey, are you still up?\n"
               "January 15, 2024, 9:01 PM, Mira : Yeah, just finished the chapter\n"
               "January 15, 2024, 9:01 PM, Mira : Photo\n"
               "January 15, 2024, 9:02 PM, Alex : And? What did you think?\n"
               "January 15, 2024, 9:03 PM, Mira : Honestly I cried.\nThe lighthouse got me.\n")
KAKAO_IOS = ("2024년 1월 15일 월요일\n2024. 1. 15. 오후 9:00, 준호 : 아직 안 자?\n2024. 1. 15. 오후 9:01, 민지 : 응\n"
             "2024. 1. 15. 오전 11:02, 준호 : 결말은?\n")
IMESSAGE = ("Jan 15, 2024  9:00:00 PM (Read by them after 1 minute)\nMe\nHey, are you still up?\n\n"
            "Jan 15, 2024  9:01:00 PM\nMira\nYeah, just finished the chapter\n\n"
            "Jan 15, 2024  9:02:00 PM\nMe\n/Users/alex/Library/Messages/Attachments/9b/IMG_0421.HEIC\n\n"
            "Jan 15, 2024  9:03:00 PM\nMira\nHonestly I cried.\nThe lighthouse got me.\nTapbacks:\n    Loved by Me\n\n"
            "Jan 15, 2024  9:04:00 PM\nMe\nHa, that was the goal\nThis message responded to an earlier message.\n\n"
            "Jan 15, 2024  9:05:00 PM Me named the conversation Book club\n")
WECHAT = ("2024-01-15 21:00:00 小明\n你还没睡吗？\n\n2024-01-15 21:01:00 小红\n没呢，刚看完\n\n"
          "2024-01-15 21:01:00 小红\n[表情包]\n\n2024-01-15 21:02:00 小明\n怎么样？\n引用:小红:没呢，刚看完\n\n"
          "2024-01-15 21:03:00 小红\n说实话我哭了。\n灯塔那段太好哭了。\n\n2024-01-15 21:08:00 \"小明\" 撤回了一条消息\n\n"
          "2024-01-15 21:09:00 小明\n哈哈\n")
SIGNAL = ("[2024-01-15 21:00:00] Me: Hey, are you still up?  \n[2024-01-15 21:01:00] Mira:   \n(( 😂 ))\n"
          "[2024-01-15 21:02:00] Mira: Honestly I cried.  \nThe lighthouse got me.\n(- Me: ❤️ -)\n"
          "[2024-01-15 21:05:00] Me: ![IMG_0421.jpg](./media/IMG_0421.jpg)    \n"
          "[2024-01-15 21:06:00] Me: Outgoing voice call (accepted, 5m 23s)  \n[2024-01-15 21:07:00] Mira: \n\n"
          "> Hey, are you still up?\n\nNot any more  \n[2024-01-15 21:08:00] Me: (This message was deleted)  \n"
          "[2024-01-15 21:09:00] Me: I liked the cover  \n")


def _read(tmp_path, text: str, name: str = "export.txt") -> tuple[list[tuple[str, str]], dict]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["*"], txtfilename=str(path), jsonfilename=str(out),
                                   filter_low_quality=False, filter_non_responses=False))
    assert detect_source(path) == "discord"  # read as a chat export: gaps, merges and filters apply
    return [(r["name"], r["output"]) for r in json.loads(out.read_text(encoding="utf-8"))], report


@pytest.mark.parametrize("text, app", [(LINE, "LINE"), (LINE_ANDROID, "LINE"), (KAKAO_PC, "KakaoTalk"),
                                       (KAKAO_PHONE, "KakaoTalk"), (KAKAO_IOS, "KakaoTalk"),
                                       (IMESSAGE, "imessage-exporter"), (WECHAT, "WeChatMsg"),
                                       (SIGNAL, "signal-export")])
def test_each_export_is_known(text, app):
    assert chatexports.kind(text.splitlines(True)) == app
    out = list(chatexports.lines_of(text.splitlines(True), app))
    assert len(out) == len(text.splitlines(True))  # one line out per line in: sources stay the file's lines


def test_line_chat_history(tmp_path):
    said, report = _read(tmp_path, LINE)
    assert said == [("Alex", "Hey, are you still up?"), ("Mira", "Yeah, just finished the chapter"),
                    ("Alex", "And? What did you think?"), ("Mira", 'Honestly I cried. The "lighthouse" got me.'),
                    ("Alex", "Good morning"), ("Mira", "Morning!")]
    assert report.dropped["system_message"] == 1  # the unsent message's notice; the sticker is no words
    assert list(chatexports.lines_of(LINE_ANDROID.splitlines(), "LINE"))[4] == "[01/15/2024 21:00] Alex: Hey, are you still up?"


def test_kakaotalk_on_a_pc_and_on_phones(tmp_path):
    said, _ = _read(tmp_path, KAKAO_PC)
    assert said == [("준호", "아직 안 자?"), ("민지", "응 방금 다 읽었어"), ("준호", "결말 어땠어?"),
                    ("민지", "솔직히 울었어. 등대 부분에서.")]  # the emoticon and the leaving notice are no words
    said, _ = _read(tmp_path, KAKAO_PHONE)
    assert said[-1] == ("Mira", "Honestly I cried. The lighthouse got me.") and len(said) == 4
    assert list(chatexports.lines_of(KAKAO_IOS.splitlines(), "KakaoTalk"))[1:] == [
        "[2024-01-15 21:00] 준호: 아직 안 자?", "[2024-01-15 21:01] 민지: 응", "[2024-01-15 11:02] 준호: 결말은?"]


def test_imessage_exporter_text(tmp_path):
    said, report = _read(tmp_path, IMESSAGE)
    assert said == [("Me", "Hey, are you still up?"), ("Mira", "Yeah, just finished the chapter"),
                    ("Mira", "Honestly I cried. The lighthouse got me."), ("Me", "Ha, that was the goal")]
    assert report.dropped["system_message"] == 1  # naming the conversation


def test_wechatmsg_text(tmp_path):
    said, report = _read(tmp_path, WECHAT)
    assert said == [("小明", "你还没睡吗？"), ("小红", "没呢，刚看完"), ("小明", "怎么样？"),
                    ("小红", "说实话我哭了。 灯塔那段太好哭了。"), ("小明", "哈哈")]  # the quote of 小红 is not 小明's
    assert report.dropped["system_message"] == 1  # the recalled message


def test_signal_exports_chat_md(tmp_path):
    said, report = _read(tmp_path, SIGNAL, "chat.md")
    assert said == [("Me", "Hey, are you still up?"), ("Mira", "Honestly I cried. The lighthouse got me."),
                    ("Mira", "Not any more"), ("Me", "I liked the cover")]
    assert report.dropped["system_message"] == 1  # the call; the sticker, the image and the deletion: empty


def test_texts_that_only_look_a_little_like_them_are_not_taken():
    for text in ["2024-01-15 21:00:00 INFO\nServer started\n\n2024-01-15 21:01:00 WARN\nDisk at 80%\n",  # no one back
                 "21:00\tconcert\tdoors open\n21:30\tconcert\tfirst act\n22:00\tconcert\tencore\n",  # no date line
                 "Alex: hi\nMira: hello\n", "[Alex] [9:00 PM] hi\n[Mira] [9:01 PM] hey\n[Alex] [9:02 PM] yo\n",
                 # a dated chat log (its messages' further lines), a sender with a colon, a server's log
                 "2024-01-15 21:00:00 Alice: are you coming?\n2024-01-15 21:00:30 Bob: ok\nlet me check\n"
                 "2024-01-15 21:01:00 Alice: ok\nfine\n2024-01-15 21:02:00 Bob: ok\nsee you\n",
                 "2024-01-15 21:00:00 Alice:\nHi\n\n2024-01-15 21:01:00 Bob:\nHey\n\n2024-01-15 21:02:00 Alice:\nSo?\n",
                 "2024-01-15 21:00:00 INFO\nStarting\n\n2024-01-15 21:00:01 WARN\nSlow\n\n2024-01-15 21:00:02 INFO\nUp\n",
                 # a schedule's day and tab-separated rows
                 "Monday 2024/01/15\n09:00\tMain hall\tWelcome\n09:30\tMain hall\tKeynote\n10:30\tRoom B\tPanel\n"]:
        assert chatexports.kind(text.splitlines(True)) is None, text


def test_more_of_the_apps_ways_to_write_a_time_and_a_day():
    line = "[LINE] 與小美的聊天記錄\n儲存日期：2024/01/16 10:30\n\n2024/01/15（週一）\n下午09:00\t阿明\t你還沒睡嗎？\n" \
           "下午09:01\t小美\t還沒\n上午09:02\t阿明\t好\n\n2026/1/30周五\n午後9:00\t阿明\t嗨\n"
    assert list(chatexports.lines_of(line.splitlines(), "LINE")) == [
        "", "", "", "", "[2024/01/15 21:00] 阿明: 你還沒睡嗎？", "[2024/01/15 21:01] 小美: 還沒", "[2024/01/15 09:02] 阿明: 好",
        "", "", "[2026/1/30 21:00] 阿明: 嗨"]
    kakao = ("------------------------------\n2023년 5월 10일 수요일\n------------------------------\n"
             "오전 9:23, 홍길동 : 오늘 몇시에 와?\n오전 9:25, 김철수 : 10시쯤\n오후 1:00, 홍길동 : 응\n"
             "2024. 1. 15. 21:00, 준호 : 아직 안 자?\n"
             "2024년 1월 16일 화요일\n2024. 1. 16. 오전 8:00, 준호 : 잘 잤어?\n")
    assert chatexports.kind(kakao.splitlines()) == "KakaoTalk"
    assert list(chatexports.lines_of(kakao.splitlines(), "KakaoTalk")) == [
        "", "", "", "[2023-05-10 09:23] 홍길동: 오늘 몇시에 와?", "[2023-05-10 09:25] 김철수: 10시쯤",
        "[2023-05-10 13:00] 홍길동: 응", "[2024-01-15 21:00] 준호: 아직 안 자?", "", "[2024-01-16 08:00] 준호: 잘 잤어?"]


def test_a_line_message_that_opens_with_a_quote_mark_does_not_swallow_the_rest():
    text = ('[LINE] Chat history with Mira\n2024/01/15(Mon)\n21:01\tMira\t"Dune" was great\n21:02\tAlex\tok\n'
            '21:03\tMira\t"Unclosed\n21:04\tAlex\tsee?\n21:05\tMira\t"He said ""hi""\nthen left."\n21:06\tAlex\tlol\n')
    assert list(chatexports.lines_of(text.splitlines(), "LINE"))[2:] == [
        '[2024/01/15 21:01] Mira: "Dune" was great', "[2024/01/15 21:02] Alex: ok", "[2024/01/15 21:03] Mira: Unclosed",
        "[2024/01/15 21:04] Alex: see?", '[2024/01/15 21:05] Mira: He said "hi"', "then left.",
        "[2024/01/15 21:06] Alex: lol"]


def test_signal_exports_attachments_and_stickers_on_the_message_line_and_kakaotalks_english_day():
    lines = ["[2024-01-15 21:00:00] Alice: hi", "[2024-01-15 21:01:00] Bob: (( 😂 ))",
             "[2024-01-15 21:02:00] Alice: look at this  ![photo.jpg](./media/photo.jpg)  ",
             "[2024-01-15 21:03:00] Alice:   ![IMG_1.jpg](./media/IMG_1.jpg)  [clip.mp4](./media/clip.mp4)  "]
    assert list(chatexports.lines_of(lines, "signal-export"))[1:] == [
        "[2024-01-15 21:01:00] Bob: <Media omitted>", "[2024-01-15 21:02:00] Alice: look at this",
        "[2024-01-15 21:03:00] Alice: <Media omitted>"]
    kakao = ["KakaoTalk Chats with Jun", "Date Saved : Jan 16, 2024, 10:50 AM", "", "Monday, January 15, 2024",
             "9:00 PM, Jun : are you still up?", "9:01 PM, Mina : yes", "9:02 PM, Jun : ok"]
    assert chatexports.kind(kakao) == "KakaoTalk"
    assert list(chatexports.lines_of(kakao, "KakaoTalk"))[4] == "[2024-01-15 21:00] Jun: are you still up?"
