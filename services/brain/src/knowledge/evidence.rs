//! What a match of a question to an FAQ entry rests on, and the calibrated chance that it is
//! right ([`Evidence::confidence`]).

/// What a match of a question to an entry rests on: the inputs of its calibrated confidence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Evidence {
    /// The share of the question's weight the entry's words cover (0 to 1).
    pub share: f32,
    /// How closely the question reads like the entry's closest phrasing (0 to 1: BM25 against
    /// that phrasing's score against itself).
    pub like: f32,
    /// How far the entry asks what the question asks, its kind and negation (0 to 1).
    pub agreement: f32,
    /// The best other entry's score over this one's (0: nothing else matches; 1: as well;
    /// more, uncapped, for an entry another beats — the one closest in meaning can be).
    pub runner_up: f32,
    /// The question's content words.
    pub words: usize,
    /// Of those, the ones the entry uses.
    pub matched: usize,
    /// Of those, the ones no entry uses (after typos are corrected).
    pub unknown: usize,
    /// The weight of the words the entry uses (inverse entry frequency, summed).
    pub covered: f32,
    /// Of the [`VOTERS`] phrasings closest to the question (BM25), the entry's.
    pub votes: usize,
    /// The closest other entry's likeness over this one's (0 to 1 and more).
    pub like_runner_up: f32,
    /// The part of `covered` that words read as typos of the knowledge base's brought.
    pub corrected: f32,
    /// `share` with a word no entry uses weighing as much as the rarest word (0 to 1).
    pub strict: f32,
    /// How the question's meaning compares with the entry's, when the knowledge base has
    /// vectors ([`super::embed`]).
    pub meaning: Option<Meaning>,
}

/// How close a question's vector is to an entry's phrasings' vectors.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Meaning {
    /// The cosine to the entry's closest phrasing.
    pub cosine: f32,
    /// That cosine less the best of any other entry (negative when another is closer).
    pub margin: f32,
    /// The spread (standard deviation) of the entries' cosines: the margin in its units
    /// reads alike across models whose cosines run in different ranges.
    pub spread: f32,
    /// Of the [`VOTERS`] phrasings closest in meaning to the question, the entry's.
    pub votes: usize,
}

/// How many of the phrasings closest to a question vote for their entries ([`Evidence::votes`]).
pub const VOTERS: usize = 5;

/// How many inputs [`Evidence::features`] gives: 13 lexical, 5 of meaning (0 without vectors).
pub const FEATURES: usize = 18;

/// A logistic model of whether a match is right: `1 / (1 + e^-(bias + weights · features))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// The intercept.
    pub bias: f32,
    /// One weight per [`Evidence::features`] input.
    pub weights: [f32; FEATURES],
}

impl Calibration {
    /// The chance that evidence `e` is a right match.
    pub fn apply(&self, e: &Evidence) -> f32 {
        self.apply_features(&e.features())
    }

    /// The chance that a match with these [`Evidence::features`] is right.
    pub fn apply_features(&self, features: &[f32; FEATURES]) -> f32 {
        let z = self.bias
            + self
                .weights
                .iter()
                .zip(features)
                .map(|(w, x)| w * x)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

impl Evidence {
    /// How well the entry matches, for ranking entries: the share of the question it covers,
    /// lifted by how closely it reads like a phrasing, times the agreement.
    pub fn score(&self) -> f32 {
        self.share * (0.4 + 0.6 * self.like) * self.agreement
    }

    /// The inputs of the calibration: the score, share, likeness, agreement, the runner-up's
    /// ratio, the logs of the question's length and of the words matched, the share of its
    /// words unknown, and the weight covered; then, with vectors, the cosine, the margin, the
    /// margin in spreads, whether the entry is the closest in meaning, and its votes by
    /// meaning.
    pub fn features(&self) -> [f32; FEATURES] {
        let words = self.words.max(1) as f32;
        let m = self.meaning.unwrap_or_default();
        [
            self.score(),
            self.share,
            self.like,
            self.agreement,
            self.runner_up,
            words.ln_1p(),
            (self.matched as f32).ln_1p(),
            self.unknown as f32 / words,
            self.covered / 10.0,
            self.votes as f32 / VOTERS as f32,
            self.like_runner_up.min(2.0),
            if self.covered > 0.0 {
                self.corrected / self.covered
            } else {
                0.0
            },
            self.strict,
            m.cosine,
            m.margin,
            if m.spread > 0.0 {
                (m.margin / m.spread).clamp(-5.0, 5.0) / 5.0
            } else {
                0.0
            },
            f32::from(u8::from(self.meaning.is_some() && m.margin > 0.0)),
            m.votes as f32 / VOTERS as f32,
        ]
    }

    /// The chance that the match is right ([`CALIBRATION`], or with vectors
    /// [`CALIBRATION_MEANING`]).
    pub fn confidence(&self) -> f32 {
        match self.meaning {
            Some(_) => CALIBRATION_MEANING.apply(self),
            None => CALIBRATION.apply(self),
        }
    }
}

/// The calibration of [`Evidence::confidence`]: a logistic regression fitted by `scripts/eval-kb
/// --fit` (2026-12-07) on held-out training rows of banking77 and CLINC150, as written and with
/// a typo each, and on the example shop's evaluation set — each dataset weighing the same, the
/// shop a quarter, out-of-scope questions a fifth of CLINC150. Refit after changing a feature.
pub const CALIBRATION: Calibration = Calibration {
    bias: 3.760,
    weights: [
        6.861, -2.505, -1.580, -2.224, -3.646, -0.808, 0.898, -4.023, 0.616, 3.229, 0.914, -0.006,
        -2.528, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
};

/// The calibration with vectors: fitted like [`CALIBRATION`] by `scripts/eval-kb --fit
/// --embeddings minilm` (2026-12-07), the vectors all-MiniLM-L6-v2's, out-of-scope questions
/// weighing two fifths of CLINC150. A provider's model is
/// read through the same weights; its cosines run in other ranges, which the margin in
/// spreads (feature 16) is there to absorb — not measured here (no provider reachable).
pub const CALIBRATION_MEANING: Calibration = Calibration {
    bias: -4.789,
    weights: [
        2.203, -0.636, -1.928, -0.698, -0.595, 0.131, 0.492, -1.010, 0.633, 1.422, 0.597, 2.248,
        -0.002, 4.961, 6.696, -0.368, -0.312, 2.781,
    ],
    // cosine, margin, margin in spreads, closest, votes by meaning
};
