"""Vera for Nuke, GUI sessions only: the Vera menu, the Nodes toolbar entry and the monitor panel."""

import nuke
import nukescripts

import vera_nuke.actions as vera_actions

_vera_menu = nuke.menu("Nuke").addMenu("Vera")
_vera_menu.addCommand("Vera Edit", vera_actions.create_node, tooltip="Create a Vera Edit node")
_vera_menu.addCommand("Monitor", vera_actions.open_monitor, tooltip="Vera jobs of this script")
_vera_menu.addCommand("Preferences...", vera_actions.edit_preferences,
                      tooltip="vera-render path, default farm, output root")

nuke.menu("Nodes").addMenu("Vera").addCommand("Vera Edit", vera_actions.create_node)

# Registering makes the panel restorable from saved workspaces (Pane menu > Vera Monitor).
nukescripts.panels.registerWidgetAsPanel(vera_actions.MONITOR_WIDGET, "Vera Monitor", vera_actions.MONITOR_ID)
