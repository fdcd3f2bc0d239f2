"""Agents: specs as data (planner, plan reviewer, engineer, executor, researcher), one
factory turning them into AG2 agents, and the code execution the executor uses."""
