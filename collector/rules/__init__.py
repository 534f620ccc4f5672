"""The collector's business decisions, as plain functions over plain values.

Each store part reads the rows a decision needs, calls the function here, and writes what it
returned, inside one transaction ("decide, then apply"). Nothing in this package knows SQL, so a
rule is written once for both engines and tested without a database.
"""
