"""`nukescripts.panels` as Nuke ships it, minus the Qt embedding.

`registerWidgetAsPanel(widget, name, id, create=False)`: `widget` is Python source naming the widget class,
evaluated later (Nuke wraps it in a PyCustom_Knob whose `makeUI` instantiates it); the panel is added to the
"Pane" menu and registered under `id` for `restorePanel`. Here the expression is evaluated on `addToPane()`
/ `restorePanel()` the same way, so a wrong class path fails in tests as it would in Nuke.
"""

import nuke

_panels = {}
registered = []  # (widget, name, id) in registration order, for tests


class PythonPanel:
    def __init__(self, title="", id="", scrollable=True):
        self.title = title
        self.id = id
        self.knobs = []
        self.pane = None

    def addKnob(self, knob):
        self.knobs.append(knob)

    def addToPane(self, pane=None):
        self.pane = pane
        return self


class _WidgetPanel(PythonPanel):
    def __init__(self, widget, name, id):
        super().__init__(name, id)
        self.widget_expression = widget
        self.widget = None
        self.addKnob(nuke.PyCustom_Knob(name, "", f"__import__('nukescripts').panels.WidgetKnob({widget})"))

    def addToPane(self, pane=None):
        # Nuke's makeUI: evaluate the expression in __main__'s namespace and instantiate the class.
        import __main__

        self.widget = eval(self.widget_expression, vars(__main__))()
        return super().addToPane(pane)


def registerPanel(id, command):
    _panels[id] = command


def unregisterPanel(id, command=None):
    del _panels[id]


def restorePanel(id):
    return _panels[id]()


def registerWidgetAsPanel(widget, name, id, create=False):
    registered.append((widget, name, id))

    def add_panel():
        return _WidgetPanel(widget, name, id).addToPane()

    nuke.menu("Pane").addCommand(name, add_panel)
    registerPanel(id, add_panel)
    return _WidgetPanel(widget, name, id) if create else None


def reset():
    _panels.clear()
    registered.clear()
