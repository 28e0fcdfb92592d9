"""Autoscaling: policies, the HPA-exact decision engine, metric sources and scale targets."""
