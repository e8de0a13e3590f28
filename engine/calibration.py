"""Calibration text for w8a8: activation ranges are measured on it once, at load time.
Plain prose written for this purpose (it is not the benchmark's perplexity text)."""

CALIBRATION_TEXT = """\
Every good kitchen runs on lists. Before the doors open, the cook walks along the counter and checks that the \
onions are chopped, the stock is simmering, the knives are sharp and the plates are warm. Nothing on the list \
is difficult by itself, but a kitchen that skips one small step at six o'clock will pay for it at nine, when the \
room is full and every table wants its dinner at once.

Scientists keep lists too, though they call them protocols. A chemist measuring the acidity of a sample will \
rinse the probe, calibrate it against two known solutions, record the temperature, and only then take the \
reading. If the numbers look strange, the first question is never whether nature has changed its mind; it is \
whether one of the steps was done carelessly. Most surprising results turn out to be dirty glassware.

Pilots are famous for their checklists. Fuel, flaps, trim, instruments, doors: the same words in the same order, \
read aloud even by captains with thirty years of flying. It can look like ceremony to a passenger, but the \
checklist exists because memory fails most often on the days when everything seems routine.

Teachers, gardeners, engineers and parents all learn the same lesson in their own way. Attention is limited, \
and a written list lets it rest on what matters. The list does not make anyone wise. It simply clears away the \
small mistakes, so that the large decisions can get the care they deserve. In the end, the habit of checking is \
less about distrust than about respect: for the work, for the people who depend on it, and for the simple fact \
that everyone, on some ordinary afternoon, forgets something.

Numbers matter as well: 3 cups of flour, 2 eggs, 250 grams of butter, 180 degrees for 25 minutes. Questions too. \
Where is the nearest station? How long will the meeting last? What did the report say about sales in March, \
April and May? "Please send the file by Friday," she wrote, "and copy the whole team."
"""
