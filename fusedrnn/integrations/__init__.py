"""Ways in from other libraries: each module adapts one library's recurrent modules to fusedrnn, imported on its
own (the library is needed only there)."""
