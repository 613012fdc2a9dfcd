"""Conformance: the cross-check cases of every registered op (``impnb.conformance.cases``), shipped with the
package so that an installed impnb can check any implementation against its reference."""
