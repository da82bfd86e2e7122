"""The fan-out rules (`app.domain.notifications`), pure: no server, no database."""

from __future__ import annotations

from app.domain.notifications import DEFAULT_PREFERENCES, Planned, excerpt, mentioned_names, plan, plan_common_ground


def test_mentions_are_parsed_like_names_not_like_addresses() -> None:
    body = "@Bob and @carol.j, see mail@example.org; @bob again. (@dan)"
    assert mentioned_names(body) == ["bob", "carol.j", "dan"]
    assert mentioned_names("no one here, not even @ or @@") == []
    assert len(mentioned_names(" ".join(f"@u{i}" for i in range(50)))) == 20


def test_reply_mention_and_followers() -> None:
    result = plan(
        actor_id="carol",
        parent_author_id="bob",
        mentioned_user_ids=["dan", "carol"],
        follower_ids=["erin", "bob", "carol"],
        preferences={"erin": {**DEFAULT_PREFERENCES, "followed": True}},
    )
    assert result.notifications == [
        Planned("dan", "mention", "high"),
        Planned("bob", "reply", "normal"),
        Planned("erin", "activity", "normal"),
    ]
    # Everyone following but the actor gets the unread-count update.
    assert result.activity_updates == ["bob", "erin"]


def test_one_notification_per_person_and_preferences_respected() -> None:
    both = plan(actor_id="carol", parent_author_id="bob", mentioned_user_ids=["bob"], follower_ids=[], preferences={})
    assert both.notifications == [Planned("bob", "mention", "high")]
    no_mentions = {"bob": {**DEFAULT_PREFERENCES, "mentions": False}}
    fallback = plan(
        actor_id="carol", parent_author_id="bob", mentioned_user_ids=["bob"], follower_ids=[], preferences=no_mentions
    )
    assert fallback.notifications == [Planned("bob", "reply", "normal")]
    nothing = {"bob": {**DEFAULT_PREFERENCES, "mentions": False, "replies": False}}
    silent = plan(
        actor_id="carol", parent_author_id="bob", mentioned_user_ids=["bob"], follower_ids=[], preferences=nothing
    )
    assert silent.notifications == []
    own = plan(actor_id="bob", parent_author_id="bob", mentioned_user_ids=["bob"], follower_ids=["bob"], preferences={})
    assert own.notifications == [] and own.activity_updates == []


def test_excerpt_is_short_and_flat() -> None:
    assert excerpt("a\n\nb   c") == "a b c"
    long = excerpt("word " * 100)
    assert len(long) == 140 and long.endswith("…")


def test_common_ground_goes_to_followers_who_kept_it_on() -> None:
    off = {"dan": {**DEFAULT_PREFERENCES, "common_ground": False}}
    planned = plan_common_ground(actor_id="analyzer", follower_ids=["dan", "bob", "analyzer", "erin"], preferences=off)
    assert planned == [Planned("bob", "common_ground", "normal"), Planned("erin", "common_ground", "normal")]
