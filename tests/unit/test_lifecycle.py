"""The alert lifecycle (alerts/lifecycle.py): who is told what, when — pure, with a simulated clock."""

from __future__ import annotations

from dataclasses import replace

from plantwatch.alerts.lifecycle import Alert, Matcher, ReceiverRouting, RuleRouting, Silence, muted_by, plan

T0 = 1767254400.0  # 2026-01-01T08:00:00Z


class World:
    """The stored state a notifier keeps between steps: what was told, the groups; alerts set by the test."""

    def __init__(self, rules, receivers):
        self.rules, self.receivers = rules, receivers
        self.alerts: dict[str, Alert] = {}
        self.told, self.groups = {}, {}
        self.silences: list[Silence] = []
        #: Nodes in maintenance now, and maintenance windows by node: (start, end).
        self.maintenance: dict[str, bool] = {}
        self.windows: dict[str, list[tuple[float, float]]] = {}
        self.now = 0.0
        self.sent: list[tuple[float, str, str, tuple[str, ...]]] = []

    def fire(self, fp: str, at: float, severity: str = "warning", rule: str = "hot", labels: dict | None = None) -> None:
        _, node, sensor = fp.split("/")
        old = self.alerts.get(fp)
        if old is not None and old.status == "firing":
            self.alerts[fp] = replace(old, severity=severity, labels={**old.labels, "severity": severity})
            return
        base = {"rule": rule, "node": node, "sensor": sensor, "severity": severity, **(labels or {})}
        self.alerts[fp] = Alert(fp, rule, node, sensor, severity, "firing", 90.0, f"{fp} hot", at, labels=base)

    def resolve(self, fp: str, at: float) -> None:
        self.alerts[fp] = replace(self.alerts[fp], status="resolved", ends_at=at)

    def in_maintenance(self, node: str, t: float) -> bool:
        if t == self.now and node in self.maintenance:
            return self.maintenance[node]
        return any(s <= t < e for s, e in self.windows.get(node, ()))

    def step(self, now: float) -> list[tuple[str, str, tuple[str, ...]]]:
        self.now = now
        p = plan(now, self.alerts.values(), self.told, self.groups, self.rules, self.receivers, self.silences, self.in_maintenance)
        for t in p.told:
            self.told[(t.receiver, t.fingerprint, t.starts_at)] = t
        for g in p.groups:
            self.groups[(g.receiver, g.key)] = g
        out = [
            (n.receiver, n.kind, tuple(a.fingerprint + ("" if a.status == "firing" else "~") for a in n.alerts)) for n in p.notifications
        ]
        self.sent.extend((now, *o) for o in out)
        return out

    def run(self, start: float, end: float, every: float = 1.0) -> list:
        out, t = [], start
        while t <= end:
            out.extend(self.step(t))
            t += every
        return out


def pager_only(**kw) -> World:
    return World(
        {"hot": RuleRouting(("pager",), repeat_s=600.0)}, {"pager": ReceiverRouting(group_by=(), wait_s=0.0, interval_s=0.0, **kw)}
    )


def test_one_notification_per_firing_and_one_per_resolve_however_often_it_is_asked():
    w = pager_only()
    w.fire("hot/press-1/temperature", T0)
    assert w.step(T0) == [("pager", "firing", ("hot/press-1/temperature",))]
    assert w.run(T0 + 1, T0 + 30) == []  # nothing new: nothing sent
    w.resolve("hot/press-1/temperature", T0 + 31)
    assert w.step(T0 + 31) == [("pager", "resolved", ("hot/press-1/temperature~",))]
    assert w.run(T0 + 32, T0 + 2000) == []  # no repeat of a resolved alert, no second resolve


def test_repeat_interval_repeats_a_firing_alert_until_acknowledged():
    w = pager_only()
    w.fire("hot/press-1/temperature", T0)
    sent = w.run(T0, T0 + 1300)
    assert [k for _, k, _ in sent] == ["firing", "repeat", "repeat"]  # at 0, 600 and 1200
    w.alerts["hot/press-1/temperature"] = replace(w.alerts["hot/press-1/temperature"], acked_by="ana")
    assert w.run(T0 + 1301, T0 + 4000) == []  # acknowledged: no more repeats
    w.resolve("hot/press-1/temperature", T0 + 4001)
    assert w.step(T0 + 4001) == [("pager", "resolved", ("hot/press-1/temperature~",))]  # the resolve still goes out


def test_a_level_change_while_firing_is_announced():
    w = pager_only()
    w.fire("hot/press-1/temperature", T0, "warning")
    w.step(T0)
    w.fire("hot/press-1/temperature", T0 + 5, "critical")
    assert w.step(T0 + 5) == [("pager", "firing", ("hot/press-1/temperature",))]
    assert w.step(T0 + 6) == []


def test_maintenance_is_checked_when_sending_not_when_the_alert_started():
    w = pager_only()
    # starts inside the window and outlives it: announced when the window ends
    w.maintenance = {"press-1": True}
    w.fire("hot/press-1/temperature", T0)
    assert w.run(T0, T0 + 100) == []
    w.maintenance = {"press-1": False}
    assert w.step(T0 + 101) == [("pager", "firing", ("hot/press-1/temperature",))]
    # started (and announced) before a window: no repeats during it
    w.maintenance = {"press-1": True}
    assert w.run(T0 + 102, T0 + 3000) == []
    w.maintenance = {"press-1": False}
    assert w.step(T0 + 3001) == [("pager", "repeat", ("hot/press-1/temperature",))]


def test_an_alert_that_starts_and_resolves_inside_a_maintenance_window_is_never_announced():
    w = pager_only()
    w.windows = {"press-1": [(T0 - 10, T0 + 60)]}
    w.fire("hot/press-1/temperature", T0)
    w.resolve("hot/press-1/temperature", T0 + 50)
    assert w.run(T0 + 50, T0 + 100) == []


def test_an_alert_that_fired_and_resolved_before_a_step_is_announced_firing_then_resolved():
    """A backlog replayed after an outage: nothing that really happened is missed."""
    w = pager_only()
    w.fire("hot/press-1/temperature", T0)
    w.resolve("hot/press-1/temperature", T0 + 300)
    assert w.run(T0 + 400, T0 + 402) == [
        ("pager", "firing", ("hot/press-1/temperature",)),
        ("pager", "resolved", ("hot/press-1/temperature~",)),
    ]
    assert w.run(T0 + 403, T0 + 2000) == []


def test_a_silence_mutes_what_its_matchers_match_while_active_and_the_resolve_still_reaches_who_was_told():
    w = pager_only()
    w.silences = [Silence("s1", (Matcher("node", "press-[12]", is_regex=True),), T0, T0 + 600, "ana", "changing the bearing")]
    w.fire("hot/press-1/temperature", T0)
    w.fire("hot/press-3/temperature", T0)
    assert w.step(T0) == [("pager", "firing", ("hot/press-3/temperature",))]
    assert w.run(T0 + 1, T0 + 599) == []
    assert w.step(T0 + 600) == [  # the silence ended while press-1 still fires; press-3 is due its repeat
        ("pager", "firing", ("hot/press-1/temperature",)),
        ("pager", "repeat", ("hot/press-3/temperature",)),
    ]
    w.silences = [Silence("s2", (Matcher("node", "press-1"),), T0 + 601, T0 + 9000, "ana", "")]
    w.resolve("hot/press-1/temperature", T0 + 700)
    assert w.step(T0 + 700) == [("pager", "resolved", ("hot/press-1/temperature~",))]


def test_matchers_follow_alertmanager():
    labels = {"node": "press-1", "severity": "critical"}
    assert Matcher("node", "press-1").matches(labels)
    assert not Matcher("node", "press-1", is_equal=False).matches(labels)
    assert Matcher("node", "press-.*", is_regex=True).matches(labels)
    assert not Matcher("node", "press", is_regex=True).matches(labels)  # anchored
    assert Matcher("team", "").matches(labels)  # a missing label is the empty string
    assert Matcher("severity", "warning|info", is_regex=True, is_equal=False).matches(labels)


def test_a_critical_alert_inhibits_the_warning_of_another_rule_on_the_same_series():
    warning = Alert("drift/press-1/temperature", "drift", "press-1", "temperature", "warning", "firing", 1.0, "", T0)
    critical = Alert("hot/press-1/temperature", "hot", "press-1", "temperature", "critical", "firing", 1.0, "", T0)
    elsewhere = replace(critical, fingerprint="hot/press-2/temperature", node="press-2")
    assert muted_by(warning, T0, (), False, [warning, critical]) == "inhibited by hot/press-1/temperature"
    assert muted_by(warning, T0, (), False, [warning, elsewhere]) is None
    assert muted_by(critical, T0, (), False, [warning, critical]) is None


def test_forty_presses_overheating_at_once_make_one_message_per_receiver():
    rules = {"hot": RuleRouting(("slack", "email"), repeat_s=3600.0)}
    receivers = {"slack": ReceiverRouting(("rule",), wait_s=10.0, interval_s=60.0), "email": ReceiverRouting(("rule",), 30.0, 300.0)}
    w = World(rules, receivers)
    for i in range(40):
        w.fire(f"hot/press-{i:02d}/temperature", T0 + i * 0.1)  # arriving over 4 s
    sent = w.run(T0, T0 + 40)
    assert [(r, k, len(fps)) for _, r, k, fps in [(0, *s) for s in sent]] == [("slack", "firing", 40), ("email", "firing", 40)]
    # the first message waited for the group (`wait`), not for each alert
    assert [t for t, r, _, _ in w.sent] == [T0 + 10, T0 + 30]
    # later changes to the group go out at most every `interval`, together
    w.resolve("hot/press-00/temperature", T0 + 41)
    w.resolve("hot/press-01/temperature", T0 + 45)
    later = w.run(T0 + 41, T0 + 400)
    assert [(r, k, len(fps)) for r, k, fps in later] == [("slack", "resolved", 2), ("email", "resolved", 2)]
    assert [t for t, _, _, _ in w.sent[2:]] == [T0 + 70, T0 + 330]


def test_escalation_reaches_the_next_tier_while_unacknowledged_and_it_hears_the_resolve():
    rules = {"hot": RuleRouting(("slack",), escalation=((900.0, ("pager",)), (1800.0, ("manager",))), repeat_s=99999.0)}
    now = ReceiverRouting((), 0.0, 0.0)
    w = World(rules, {"slack": now, "pager": now, "manager": now})
    w.fire("hot/press-1/temperature", T0)
    sent = w.run(T0, T0 + 1000, every=10.0)
    assert [(r, k) for r, k, _ in sent] == [("slack", "firing"), ("pager", "escalation")]
    w.alerts["hot/press-1/temperature"] = replace(w.alerts["hot/press-1/temperature"], acked_by="ana")
    assert w.run(T0 + 1010, T0 + 4000, every=10.0) == []  # acknowledged: the manager is never paged
    w.resolve("hot/press-1/temperature", T0 + 4001)
    assert sorted(r for r, _, _ in w.step(T0 + 4001)) == ["pager", "slack"]


def test_alertmanager_style_receivers_get_firing_alerts_again_every_resend_interval_even_when_acknowledged():
    w = World({"hot": RuleRouting(("am",), repeat_s=3600.0)}, {"am": ReceiverRouting(("rule",), 0.0, 0.0, resend_s=60.0)})
    w.fire("hot/press-1/temperature", T0)
    w.alerts["hot/press-1/temperature"] = replace(w.alerts["hot/press-1/temperature"], acked_by="ana")
    assert [k for _, k, _ in w.run(T0, T0 + 130)] == ["firing", "repeat", "repeat"]


def test_an_alert_that_fires_again_is_a_new_episode():
    w = pager_only()
    w.fire("hot/press-1/temperature", T0)
    w.step(T0)
    w.resolve("hot/press-1/temperature", T0 + 10)
    w.alerts["hot/press-1/temperature#1"] = w.alerts.pop("hot/press-1/temperature")  # the stored resolved episode
    w.fire("hot/press-1/temperature", T0 + 11)
    # one group per alert here: the old episode's resolve and the new firing go out together
    assert w.step(T0 + 11) == [("pager", "firing", ("hot/press-1/temperature~", "hot/press-1/temperature"))]
    assert w.step(T0 + 12) == []
