"""Pure spike / sink statistics and their uncertainty (no model code here)."""
