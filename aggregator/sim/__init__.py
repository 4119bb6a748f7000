"""Simulation: scenarios, the closed-loop simulation, the reference CSMS and the CSMS-side
LPC state machine (IEC 63380-1). Everything here drives the service as the outside world
would, on a manual clock."""
