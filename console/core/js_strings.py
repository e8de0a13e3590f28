"""The strings the console's scripts show, for the translation catalog: base.html renders their translations
as JSON (`{% js_strings %}`) and the scripts' t("…") looks them up. SCRIPT_STRINGS is every t("…") literal of
console/static/console/*.js (tests/test_i18n_pages.py checks the two agree); STATUS are the status words
the pages and scripts show for a status code."""

from __future__ import annotations

from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_noop as _

STATUS = {
    "pending": pgettext_lazy("status", "pending"), "loading": pgettext_lazy("status", "loading"),
    "ready": pgettext_lazy("status", "ready"), "failed": pgettext_lazy("status", "failed"),
    "stopped": pgettext_lazy("status", "stopped"), "draining": pgettext_lazy("status", "draining"),
    "lost": pgettext_lazy("status", "lost"), "queued": pgettext_lazy("status", "queued"),
    "running": pgettext_lazy("status", "running"), "succeeded": pgettext_lazy("status", "succeeded"),
    "cancelled": pgettext_lazy("status", "cancelled"), "importing": pgettext_lazy("status", "importing"),
    "idle": pgettext_lazy("status", "idle"),
}

# Strings the scripts look up by a value rather than a literal (t(name)): the explain methods.
LOOKED_UP = [_("feature ablation"), _("integrated gradients"), _("shapley")]

SCRIPT_STRINGS = [
    # BEGIN generated
    _("The file is larger than the server accepts."),
    _("The server could not be reached; check your connection and try again."),
    _("The server answered HTTP %(status)s."),
    _("failed: %(error)s"),
    _("no reason given"),
    _("cancelled"),
    _("queued, waiting for a worker"),
    _("about %(n)s s left"),
    _("about %(n)s min left"),
    _("about %(n)s h left"),
    _("progress unavailable: %(error)s"),
    _("import queued"),
    _("Import %(state)s. Reload the page to see the version's status."),
    _("Choose a .zip, .tar.gz or .gguf file first."),
    _("Uploading %(file)s… %(pct)s%"),
    _("Uploaded %(file)s"),
    _("Upload refused"),
    _("Upload failed"),
    _("Checking the hub…"),
    _("Import"),
    _("Copied"),
    _("%(n)s s ago"),
    _("pinned v%(n)s"),
    _("alias"),
    _("No replicas yet."),
    _("This deployment no longer exists."),
    _("The charting library could not be loaded; reload the page to try again."),
    _("tokens per second"),
    _("running"),
    _("waiting"),
    _("requests"),
    _("KV cache in use (%)"),
    _("admitted"),
    _("p99 TTFT (ms)"),
    _("time"),
    _("Required."),
    _("Give a whole number."),
    _("At least %(n)s."),
    _("At most %(n)s."),
    _("Use letters, digits, - and _ only."),
    _("At most %(n)s characters."),
    _("Check the marked fields."),
    _("nothing ready to serve yet"),
    _("0 = the model's own (%(n)s tokens)"),
    _("0 = the model's own"),
    _("Saved."),
    _("Delete deployment '%(name)s'? Its replicas stop and clients calling it get errors."),
    _("Stop deployment '%(name)s'? Its replicas unload and clients calling it get errors until it is started again."),
    _("Tick at least one version."),
    _("The config is not valid JSON: %(error)s"),
    _("The config must be a JSON object."),
    _("evaluation queued"),
    _("Evaluation %(state)s"),
    _("(lower is better)"),
    _("(higher is better)"),
    _("version"),
    _("size"),
    _("%(quality)s vs size (marker: %(speed)s)"),
    _("size (MB)"),
    _("Create a deployment first (Deployments page)."),
    _("Explain covers answers of up to %(n)s tokens; set %(n)s or fewer to explain the answers."),
    _("not saved: %(error)s"),
    _("saved"),
    _("shared: anyone signed in with the link can open it"),
    _("no longer shared"),
    _("Type a message first."),
    _("You"),
    _("Prompt"),
    _("%(prompt)s prompt + %(completion)s completion tokens"),
    _("first token after %(s)s s"),
    _("finish: %(reason)s"),
    _("Explain"),
    _("This answer has %(tokens)s tokens; Explain covers up to %(n)s. Set Max tokens to %(n)s or fewer and send again to explain."),
    _("explain queued"),
    _("Cancel"),
    _("Note: this answer's text tokenizes differently from the tokens the model produced; the rows are its re-tokenization."),
    _("Download %(format)s"),
    _("Charts need the plotly package on the server."),
    _("output"),
    _("input"),
    _("attribution"),
    _("total"),
    _("each input's total"),
    _("Give at least two texts, one per line."),
    _("Type a text first."),
    _("Why “%(label)s” (%(score)s): red pushed towards it, blue away."),
    # END generated
]


def catalog() -> dict[str, str]:
    """msgid → its translation in the active language, for the strings that have one."""
    out = {s: gettext(s) for s in [*SCRIPT_STRINGS, *LOOKED_UP]}
    out.update({f"status:{code}": str(word) for code, word in STATUS.items()})
    return {k: v for k, v in out.items() if k != v}
