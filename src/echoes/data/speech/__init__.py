"""Speech tools shared by speech sources: NIST SPHERE audio, MFCC features, a Festival corpus writer.

Kept light: heavy imports (soundfile, subprocess work) happen inside functions.
"""
